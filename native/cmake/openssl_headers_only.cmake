# ORTSEAL_COMPILE_ONLY (a Windows cross build with no Windows libcrypto at hand; Debian ships none): stands in
# for find_package(OpenSSL) with an OpenSSL::Crypto target made of
#   - OpenSSL 3's headers staged from the build machine's libssl-dev, their configuration.h switched from
#     Linux's LP64 word size to Win64's LLP64 (as OpenSSL's own mingw64 target configures them), and
#   - an import library naming, as exports of libcrypto-3-x64.dll (the name OpenSSL 3's Windows x64 builds
#     give libcrypto), every OpenSSL function src/crypto.c calls (cmake/libcrypto_import.cmake).
# So every source compiles for Windows and ortseal.dll links for real against everything but OpenSSL's code;
# it loads where a libcrypto-3-x64.dll of OpenSSL 3 lies beside it. Nothing here is OpenSSL's code.
set(ORTSEAL_OPENSSL_HEADERS "/usr/include" CACHE PATH "folder holding openssl/*.h (the build machine's libssl-dev)")
# Debian keeps the configured headers (configuration.h, opensslconf.h) in the multiarch folder.
file(GLOB ortseal_configuration_h ${ORTSEAL_OPENSSL_HEADERS}/openssl/configuration.h
     ${ORTSEAL_OPENSSL_HEADERS}/*-linux-gnu/openssl/configuration.h)
if(NOT EXISTS ${ORTSEAL_OPENSSL_HEADERS}/openssl/evp.h OR NOT ortseal_configuration_h)
  message(FATAL_ERROR "ORTSEAL_COMPILE_ONLY needs OpenSSL 3's headers (apt-get install libssl-dev)")
endif()
list(GET ortseal_configuration_h 0 configuration_h)
get_filename_component(configured_dir ${configuration_h} DIRECTORY)
set(staged ${CMAKE_BINARY_DIR}/openssl-headers)
file(GLOB openssl_headers ${ORTSEAL_OPENSSL_HEADERS}/openssl/*.h ${configured_dir}/*.h)
file(COPY ${openssl_headers} DESTINATION ${staged}/openssl)
file(READ ${configuration_h} configuration)
string(REPLACE "define SIXTY_FOUR_BIT_LONG" "define SIXTY_FOUR_BIT" configuration "${configuration}")
string(REPLACE "undef SIXTY_FOUR_BIT\n" "undef SIXTY_FOUR_BIT_LONG\n" configuration "${configuration}")
file(WRITE ${staged}/openssl/configuration.h "${configuration}")

# The functions crypto.c calls, read from its object, become libcrypto-3-x64.dll's import library.
add_library(ortseal_crypto_probe OBJECT src/crypto.c)
target_include_directories(ortseal_crypto_probe PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/include ${staged})
find_program(ORTSEAL_DLLTOOL NAMES x86_64-w64-mingw32-dlltool dlltool REQUIRED)
set(ORTSEAL_LIBCRYPTO_IMPORT ${CMAKE_BINARY_DIR}/libcrypto-3-x64.dll.a)
add_custom_command(OUTPUT ${ORTSEAL_LIBCRYPTO_IMPORT}
  COMMAND ${CMAKE_COMMAND} -DNM=${CMAKE_NM} -DDLLTOOL=${ORTSEAL_DLLTOOL}
          "-DOBJECTS=$<JOIN:$<TARGET_OBJECTS:ortseal_crypto_probe>,|>" -DDEF=${CMAKE_BINARY_DIR}/libcrypto-3-x64.def
          -DLIB=${ORTSEAL_LIBCRYPTO_IMPORT} -P ${CMAKE_CURRENT_LIST_DIR}/libcrypto_import.cmake
  DEPENDS ortseal_crypto_probe $<TARGET_OBJECTS:ortseal_crypto_probe> ${CMAKE_CURRENT_LIST_DIR}/libcrypto_import.cmake
  VERBATIM)
add_custom_target(ortseal_libcrypto_import DEPENDS ${ORTSEAL_LIBCRYPTO_IMPORT})
add_library(OpenSSL::Crypto INTERFACE IMPORTED)
set_target_properties(OpenSSL::Crypto PROPERTIES INTERFACE_INCLUDE_DIRECTORIES ${staged}
                      INTERFACE_LINK_LIBRARIES ${ORTSEAL_LIBCRYPTO_IMPORT})
