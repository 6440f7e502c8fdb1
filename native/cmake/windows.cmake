# Windows (a native MinGW/MSVC build, or the mingw-w64 cross build: cmake/mingw-w64.cmake), included
# by CMakeLists.txt once its targets exist:
#   - ortseal.dll links ntdll (os_win.c opens a model's data files relative to its folder with NtCreateFile);
#   - ortseal_shim.dll exports exactly ORT's decrypt/encrypt and the ortseal_shim_* functions
#     (cmake/ortseal_shim.def; shim.c's ELF visibility attribute means nothing to PE), with winpthreads and
#     libgcc linked in statically so it needs nothing beside KERNEL32 and the C runtime.
target_link_libraries(ortseal PRIVATE ntdll)
target_sources(ortseal_shim PRIVATE ${CMAKE_CURRENT_LIST_DIR}/ortseal_shim.def)
set_target_properties(ortseal ortseal_shim PROPERTIES PREFIX "")
if(MINGW)
  target_compile_options(ortseal_shim PRIVATE -Wno-attributes)
  target_link_options(ortseal PRIVATE -static-libgcc)
  target_link_options(ortseal_shim PRIVATE -static -static-libgcc)
endif()
if(TARGET ortseal_libcrypto_import)  # ORTSEAL_COMPILE_ONLY: the import library is made at build time
  add_dependencies(ortseal ortseal_libcrypto_import)
endif()
# The Windows test host (tests/win_host.c, run under Wine by tests/test_native_portability.py): the shim DLL
# loaded as ORT loads it, and os_win.c's checks driven directly (linked from its sources, since ortseal.dll
# needs a Windows libcrypto this build may not have).
option(ORTSEAL_WIN_TEST_HOST "Build ortseal_win_host.exe (Windows test host)" OFF)
if(ORTSEAL_WIN_TEST_HOST)
  add_executable(ortseal_win_host tests/win_host.c src/os_win.c src/errors.c)
  target_include_directories(ortseal_win_host PRIVATE include src)
  target_link_libraries(ortseal_win_host PRIVATE ntdll)
  if(MINGW)
    target_link_options(ortseal_win_host PRIVATE -static -static-libgcc)
  endif()
  add_dependencies(ortseal_win_host ortseal_shim)
endif()
