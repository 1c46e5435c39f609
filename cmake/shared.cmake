# libp11smime.so: the three archives (built PIC) linked whole into one shared
# object.  Its exported set is exactly the functions the public headers
# declare: a linker version script generated from them at build time
# (tools/public-symbols.sh), so a header change cannot forget an export and
# a private helper cannot leak one.  See docs/design.md, "The library".
file(GLOB P11S_PUBLIC_HEADERS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/include/p11smime/*.h)
set(P11S_VERSION_SCRIPT ${CMAKE_BINARY_DIR}/libp11smime.map)
add_custom_command(
  OUTPUT ${P11S_VERSION_SCRIPT}
  COMMAND bash ${CMAKE_SOURCE_DIR}/tools/public-symbols.sh
          --version-script P11SMIME_${PROJECT_VERSION_MAJOR} ${P11S_PUBLIC_HEADERS}
          > ${P11S_VERSION_SCRIPT}.tmp
  COMMAND ${CMAKE_COMMAND} -E rename ${P11S_VERSION_SCRIPT}.tmp ${P11S_VERSION_SCRIPT}
  DEPENDS ${P11S_PUBLIC_HEADERS} ${CMAKE_SOURCE_DIR}/tools/public-symbols.sh
  COMMENT "Exports of libp11smime.so from the public headers"
  VERBATIM)
add_custom_target(p11smime_map DEPENDS ${P11S_VERSION_SCRIPT})

add_library(p11smime_shared SHARED ${CMAKE_SOURCE_DIR}/cmake/shared.c)
add_dependencies(p11smime_shared p11smime_map)
set_target_properties(p11smime_shared PROPERTIES
  OUTPUT_NAME p11smime
  VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR}
  LINK_DEPENDS ${P11S_VERSION_SCRIPT})
target_include_directories(p11smime_shared PUBLIC ${CMAKE_SOURCE_DIR}/include)
target_link_libraries(p11smime_shared
  PRIVATE -Wl,--whole-archive p11smime p11s_pkcs11 p11s_common -Wl,--no-whole-archive
          PkgConfig::P11KIT ${CMAKE_DL_LIBS} Threads::Threads
          -Wl,--version-script=${P11S_VERSION_SCRIPT}
  PUBLIC PkgConfig::OPENSSL)
# Only what it calls: libssl comes with the openssl package's flags, and each
# library mapped costs every program that loads this one.
target_link_options(p11smime_shared PRIVATE -Wl,--as-needed)
# Sanitizer runtimes live in the executable: only a plain build can insist
# that the library names every library it needs.
if(NOT P11S_SANITIZE AND NOT P11S_FUZZ AND NOT P11S_TSAN)
  target_link_options(p11smime_shared PRIVATE -Wl,--no-undefined)
endif()

# pkg-config: relocatable (prefix found from the .pc file's own place), so
# `cmake --install --prefix DIR` gives a usable tree anywhere.
file(RELATIVE_PATH P11S_PC_PREFIX ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" P11S_PC_PREFIX "${P11S_PC_PREFIX}")
configure_file(${CMAKE_SOURCE_DIR}/cmake/p11smime.pc.in ${CMAKE_BINARY_DIR}/p11smime.pc @ONLY)

install(TARGETS p11smime_shared LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES ${P11S_PUBLIC_HEADERS} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/p11smime)
install(FILES ${CMAKE_BINARY_DIR}/p11smime.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
