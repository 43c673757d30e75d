# Gzips one file: cmake -DIN=<file> -DOUT=<file.gz> -P gzip_file.cmake
# (CMake's own libarchive, so the build needs no gzip tool; "raw" = the file's bytes, no archive).
get_filename_component(dir ${OUT} DIRECTORY)
file(MAKE_DIRECTORY ${dir})
file(ARCHIVE_CREATE OUTPUT ${OUT}.tmp PATHS ${IN} FORMAT raw COMPRESSION GZip COMPRESSION_LEVEL 9)
file(RENAME ${OUT}.tmp ${OUT})
