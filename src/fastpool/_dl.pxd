# cython: language_level=3
# Finding a C function in a client library its Python module already loaded
# (fastpool._mysqlstatus, fastpool._pgstatus): never loads one itself.

from posix.dlfcn cimport RTLD_NOW, dlopen, dlsym


cdef extern from "<dlfcn.h>" nogil:
    int RTLD_NOLOAD  # not in Cython's posix.dlfcn


cdef inline void* loaded_symbol(str library, const char* symbol):
    """``symbol`` in the already loaded ``library`` (a path) or its
    dependencies, or NULL."""
    cdef bytes path = library.encode()
    cdef void* handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if handle == NULL:
        return NULL
    return dlsym(handle, symbol)
