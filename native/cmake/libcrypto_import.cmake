# cmake -P script (cmake/openssl_headers_only.cmake): write a .def naming, as exports of
# libcrypto-3-x64.dll (the name OpenSSL 3's Windows x64 builds give libcrypto), every OpenSSL function the
# objects call, and turn it into an import library with dlltool. ortseal.dll links against it, so every
# other symbol (Windows API, C runtime, the library's own) is resolved by a real link; only OpenSSL's code is
# absent, and the DLL loads where a libcrypto-3-x64.dll is beside it.
#   -DNM=... -DDLLTOOL=... -DOBJECTS="a.obj|b.obj" -DDEF=out.def -DLIB=out.dll.a
string(REPLACE "|" ";" OBJECTS "${OBJECTS}")
execute_process(COMMAND ${NM} -u ${OBJECTS} OUTPUT_VARIABLE undefined COMMAND_ERROR_IS_FATAL ANY)
string(REGEX MATCHALL "[ \t]U (EVP_[A-Za-z0-9_]+|OSSL_[A-Za-z0-9_]+|RAND_[A-Za-z0-9_]+|CRYPTO_[A-Za-z0-9_]+|HMAC[A-Za-z0-9_]*|OPENSSL_[A-Za-z0-9_]+|ERR_[A-Za-z0-9_]+)" found "${undefined}")
set(names "")
foreach(item ${found})
  string(REGEX REPLACE "^[ \t]U " "" item "${item}")
  list(APPEND names ${item})
endforeach()
list(REMOVE_DUPLICATES names)
list(SORT names)
list(JOIN names "\n    " exports)
file(WRITE ${DEF} "LIBRARY libcrypto-3-x64.dll\nEXPORTS\n    ${exports}\n")
execute_process(COMMAND ${DLLTOOL} -d ${DEF} -l ${LIB} COMMAND_ERROR_IS_FATAL ANY)
