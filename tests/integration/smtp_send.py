#!/usr/bin/env python3
"""Send mail over SMTP from several clients at once (the milter's test and bench).

  smtp_send.py PORT CLIENTS RESULTS FILE...
      Each FILE is one message; the envelope sender is its From address, the
      recipient rcpt@example.net.  CLIENTS threads share the files, each over
      its own connection, several messages a connection.  RESULTS gets one
      line a file: "FILE CODE TEXT" (250 when the MTA took it).

  smtp_send.py --bench PORT CLIENTS COUNT FROM
      COUNT small messages from FROM; prints the messages per second the MTA
      accepted (its 250 after DATA, which comes after the milter's answer).
"""
import email.utils
import queue
import re
import smtplib
import sys
import threading
import time


def envelope_from(data):
    for line in data.split(b"\n"):
        if not line.strip():
            break
        if line.lower().startswith(b"from:"):
            return email.utils.parseaddr(line[5:].decode("ascii", "replace"))[1]
    return ""


def client(port, work, results, lock):
    conn = smtplib.SMTP("127.0.0.1", port, timeout=120)
    conn.ehlo("client.invalid")
    while True:
        try:
            name, data = work.get_nowait()
        except queue.Empty:
            break
        code, text = 250, "ok"
        try:
            conn.sendmail(envelope_from(data), ["rcpt@example.net"], data)
        except smtplib.SMTPDataError as e:
            code, text = e.smtp_code, e.smtp_error.decode("ascii", "replace")
        except smtplib.SMTPRecipientsRefused as e:
            code, text = 0, str(e)
        except smtplib.SMTPSenderRefused as e:
            code, text = e.smtp_code, e.smtp_error.decode("ascii", "replace")
        with lock:
            results.append((name, code, " ".join(text.split())))
    conn.quit()


def run(port, clients, items):
    work = queue.Queue()
    for item in items:
        work.put(item)
    results, lock = [], threading.Lock()
    threads = [threading.Thread(target=client, args=(port, work, results, lock))
               for _ in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.monotonic() - start


def main():
    if sys.argv[1] == "--bench":
        port, clients, count, sender = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        items = []
        for i in range(count):
            body = ("From: Bench <%s>\r\nTo: rcpt@example.net\r\nSubject: bench %d\r\n"
                    "Message-ID: <bench-%d@example.org>\r\n"
                    "Content-Type: text/plain; charset=us-ascii\r\n\r\n" % (sender, i, i))
            body += "A line of a short business mail, number %d.\r\n" % i
            body += ("Some more text so that the message is a few hundred bytes long, "
                     "as most mail is.\r\n") * 8
            items.append(("m%d" % i, body.encode()))
        results, secs = run(port, clients, items)
        bad = [r for r in results if r[1] != 250]
        if bad:
            print("refused: %d (first: %s)" % (len(bad), bad[0]), file=sys.stderr)
            sys.exit(1)
        print("%.1f" % (count / secs))
        return
    port, clients, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    items = []
    for name in sys.argv[4:]:
        with open(name, "rb") as f:
            # SMTP lines end in CRLF (smtplib would add a blank line after a bare LF).
            items.append((name, re.sub(rb"\r?\n", b"\r\n", f.read())))
    results, _ = run(port, clients, items)
    with open(out, "w") as f:
        for name, code, text in sorted(results):
            f.write("%s %d %s\n" % (name, code, text))


if __name__ == "__main__":
    main()
