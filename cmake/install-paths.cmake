# Run by `cmake --install` before the files below are copied (see cmake/install.cmake):
# writes s3commit.pc and s3commit.service into the build tree with the prefix this
# install uses. DESTDIR is not part of them: it is where files are staged, not where
# they will live (pkg-config finds a staged tree with PKG_CONFIG_SYSROOT_DIR).
set(prefix "${CMAKE_INSTALL_PREFIX}")
foreach(d LIBDIR INCLUDEDIR BINDIR DOCDIR)
  if(IS_ABSOLUTE "${S3C_${d}}")
    set(s3c_pc_${d} "${S3C_${d}}")
    set(s3c_abs_${d} "${S3C_${d}}")
  else()
    set(s3c_pc_${d} "\${prefix}/${S3C_${d}}")
    set(s3c_abs_${d} "${prefix}/${S3C_${d}}")
  endif()
endforeach()
set(libdir "${s3c_pc_LIBDIR}")
set(includedir "${s3c_pc_INCLUDEDIR}")
configure_file("${S3C_SRC}/cmake/s3commit.pc.in" "${S3C_BIN}/install/s3commit.pc" @ONLY)

# The unit in packaging/ names /usr/bin/s3commit, where a distribution package puts it,
file(READ "${S3C_SRC}/packaging/s3commit.service" s3c_unit)
# and its docs in /usr/share/doc/s3commit.
string(REPLACE "/usr/bin/s3commit " "${s3c_abs_BINDIR}/s3commit " s3c_unit "${s3c_unit}")
string(REPLACE "file:/usr/share/doc/s3commit/" "file:${s3c_abs_DOCDIR}/" s3c_unit "${s3c_unit}")
file(WRITE "${S3C_BIN}/install/s3commit.service" "${s3c_unit}")
