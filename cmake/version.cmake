# One version, three places that must agree: project(VERSION) here, S3C_VERSION_* in
# include/s3commit.h (what users compile against and s3c_version() returns), and the
# shared library's file name and SONAME. A mismatch stops the configure, so a release
# cannot ship a header that lies about its library.
file(STRINGS ${PROJECT_SOURCE_DIR}/include/s3commit.h s3c_version_lines
     REGEX "^#define S3C_VERSION_(MAJOR|MINOR|PATCH|STRING) ")
foreach(part MAJOR MINOR PATCH STRING)
  set(s3c_header_${part} "")
  foreach(line ${s3c_version_lines})
    if(line MATCHES "^#define S3C_VERSION_${part} +\"?([0-9.]+)\"?$")
      set(s3c_header_${part} ${CMAKE_MATCH_1})
    endif()
  endforeach()
endforeach()
set(s3c_header_version "${s3c_header_MAJOR}.${s3c_header_MINOR}.${s3c_header_PATCH}")
if(NOT s3c_header_version STREQUAL PROJECT_VERSION OR
   NOT s3c_header_STRING STREQUAL PROJECT_VERSION)
  message(FATAL_ERROR
    "include/s3commit.h says version ${s3c_header_version} (S3C_VERSION_STRING "
    "\"${s3c_header_STRING}\") but CMakeLists.txt says project(VERSION ${PROJECT_VERSION}); "
    "set S3C_VERSION_MAJOR/MINOR/PATCH/STRING to match")
endif()

# Before 1.0 a minor release may break the ABI, so the SONAME carries MAJOR.MINOR
# (libs3commit.so.0.1); from 1.0 on, MAJOR alone.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(S3C_SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
else()
  set(S3C_SOVERSION ${PROJECT_VERSION_MAJOR})
endif()
set_target_properties(s3commit_shared PROPERTIES VERSION ${PROJECT_VERSION}
                      SOVERSION ${S3C_SOVERSION})

# Export only the public API from the shared library (see cmake/s3commit.map).
target_link_options(s3commit_shared PRIVATE
                    -Wl,--version-script=${PROJECT_SOURCE_DIR}/cmake/s3commit.map)
set_property(TARGET s3commit_shared APPEND PROPERTY LINK_DEPENDS
             ${PROJECT_SOURCE_DIR}/cmake/s3commit.map)
