# `cmake --install build [--prefix P]` (and `make install PREFIX=P DESTDIR=D`): the shared
# and static library, the public header, the programs, a pkg-config file, a CMake package
# (find_package(s3commit) -> s3commit::s3commit), the docs, an example config and the
# systemd unit. Paths that end up inside installed files (.pc, unit) are taken at install
# time, so a --prefix given to `cmake --install` is honoured, not only the configured one.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(S3C_SYSTEMD_UNITDIR "lib/systemd/system" CACHE STRING
    "where the systemd unit goes, relative to the prefix (or absolute)")
set(S3C_SYSUSERSDIR "lib/sysusers.d" CACHE STRING
    "where the sysusers.d entry for the s3commit user goes, relative to the prefix")
set(S3C_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/s3commit")

# s3commit::s3commit is the shared library, the one most users want; the static one is
# s3commit::s3commit_static (it brings its dependencies along as link interface).
set_target_properties(s3commit_shared PROPERTIES EXPORT_NAME s3commit)
set_target_properties(s3commit PROPERTIES EXPORT_NAME s3commit_static)
install(TARGETS s3commit_shared s3commit EXPORT s3commitTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} NAMELINK_COMPONENT Development
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_SOURCE_DIR}/include/s3commit.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# The programs link the static library, so they need no libs3commit.so at run time and
# no RPATH; only the system libraries (libcurl, libcrypto, libcjson, libexpat, libzstd).
install(TARGETS s3commit_cli s3commit-mock s3commit-load RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

install(EXPORT s3commitTargets NAMESPACE s3commit:: DESTINATION ${S3C_CMAKEDIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/s3commitConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/s3commitConfig.cmake
                              INSTALL_DESTINATION ${S3C_CMAKEDIR})
# Before 1.0 only the same MAJOR.MINOR is compatible (see cmake/version.cmake).
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(s3c_compat SameMinorVersion)
else()
  set(s3c_compat SameMajorVersion)
endif()
write_basic_package_version_file(${PROJECT_BINARY_DIR}/s3commitConfigVersion.cmake
                                 COMPATIBILITY ${s3c_compat})
install(FILES ${PROJECT_BINARY_DIR}/s3commitConfig.cmake
              ${PROJECT_BINARY_DIR}/s3commitConfigVersion.cmake
        DESTINATION ${S3C_CMAKEDIR})

# s3commit.pc and s3commit.service hold absolute paths: write them at install time with
# the prefix the install actually uses (CMAKE_INSTALL_PREFIX inside the install script).
install(CODE "
  set(S3C_SRC \"${PROJECT_SOURCE_DIR}\")
  set(S3C_BIN \"${PROJECT_BINARY_DIR}\")
  set(PROJECT_VERSION \"${PROJECT_VERSION}\")
  set(S3C_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
  set(S3C_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
  set(S3C_BINDIR \"${CMAKE_INSTALL_BINDIR}\")
  set(S3C_DOCDIR \"${CMAKE_INSTALL_DOCDIR}\")
  include(\"${PROJECT_SOURCE_DIR}/cmake/install-paths.cmake\")
")
install(FILES ${PROJECT_BINARY_DIR}/install/s3commit.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
install(FILES ${PROJECT_BINARY_DIR}/install/s3commit.service DESTINATION ${S3C_SYSTEMD_UNITDIR})
install(FILES ${PROJECT_SOURCE_DIR}/packaging/s3commit.sysusers DESTINATION ${S3C_SYSUSERSDIR}
        RENAME s3commit.conf)

install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
file(GLOB s3c_docs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/*.md)
install(FILES ${s3c_docs} DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${PROJECT_SOURCE_DIR}/packaging/s3commit.json ${PROJECT_SOURCE_DIR}/packaging/s3commit.env
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
