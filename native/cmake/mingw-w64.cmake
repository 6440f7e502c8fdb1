# CMake toolchain for Debian's mingw-w64 cross compiler (apt-get install mingw-w64): Windows x86-64 DLLs
# built on Linux.
#   cmake -S native -B build-win -DCMAKE_TOOLCHAIN_FILE=native/cmake/mingw-w64.cmake [-DORTSEAL_COMPILE_ONLY=ON]
# A Windows OpenSSL 3 (headers, libcrypto.dll.a) is found under ORTSEAL_MINGW_ROOTS (a ;-list, e.g. the prefix a
# mingw build of OpenSSL was installed to); without one, ORTSEAL_COMPILE_ONLY=ON builds what needs no libcrypto.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(ORTSEAL_MINGW_TRIPLE x86_64-w64-mingw32)
# The -posix variants: C11/C++ threads and the shim's pthreads (winpthreads, linked statically into the DLLs).
find_program(CMAKE_C_COMPILER NAMES ${ORTSEAL_MINGW_TRIPLE}-gcc-posix ${ORTSEAL_MINGW_TRIPLE}-gcc REQUIRED)
find_program(CMAKE_CXX_COMPILER NAMES ${ORTSEAL_MINGW_TRIPLE}-g++-posix ${ORTSEAL_MINGW_TRIPLE}-g++ REQUIRED)
find_program(CMAKE_RC_COMPILER NAMES ${ORTSEAL_MINGW_TRIPLE}-windres)
set(ORTSEAL_MINGW_ROOTS "" CACHE STRING "extra prefixes holding Windows libraries (a mingw OpenSSL 3)")
set(CMAKE_FIND_ROOT_PATH /usr/${ORTSEAL_MINGW_TRIPLE} ${ORTSEAL_MINGW_ROOTS})
# Programs from the build machine; libraries, headers and packages only from the Windows roots (never Linux's).
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
