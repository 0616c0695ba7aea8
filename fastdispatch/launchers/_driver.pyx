# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Direct CUDA driver launch (per call): ``cuLaunchKernelEx`` from C on a precomputed plan.

libcuda is opened lazily with ``dlopen`` the first time a plan is built, so importing this
module never needs a GPU, a driver or CUDA headers (CPU CI imports it).
"""
from libc.stdint cimport uint64_t, int64_t, uint32_t, int32_t, uint8_t
from libc.string cimport memcpy

cdef extern from "<dlfcn.h>" nogil:
    void* dlopen(const char* filename, int flag)
    void* dlsym(void* handle, const char* symbol)
    int RTLD_NOW
    int RTLD_LOCAL

ctypedef fd_CUresult (*cuLaunchKernelEx_t)(const fd_CUlaunchConfig*, fd_CUfunction, void**, void**) noexcept nogil
ctypedef fd_CUresult (*cuCtxGetCurrent_t)(fd_CUcontext*) noexcept nogil
ctypedef fd_CUresult (*cuCtxPushCurrent_t)(fd_CUcontext) noexcept nogil
ctypedef fd_CUresult (*cuCtxPopCurrent_t)(fd_CUcontext*) noexcept nogil
ctypedef fd_CUresult (*cuGetErrorName_t)(fd_CUresult, const char**) noexcept nogil

cdef cuLaunchKernelEx_t _cuLaunchKernelEx = NULL
cdef cuCtxGetCurrent_t _cuCtxGetCurrent = NULL
cdef cuCtxPushCurrent_t _cuCtxPushCurrent = NULL
cdef cuCtxPopCurrent_t _cuCtxPopCurrent = NULL
cdef cuGetErrorName_t _cuGetErrorName = NULL

# Module loading (slow path, once per binary and device).
ctypedef fd_CUresult (*cuModuleLoadData_t)(void**, const void*) noexcept nogil
ctypedef fd_CUresult (*cuModuleGetFunction_t)(fd_CUfunction*, void*, const char*) noexcept nogil
ctypedef fd_CUresult (*cuFuncGetAttribute_t)(int*, int, fd_CUfunction) noexcept nogil
ctypedef fd_CUresult (*cuFuncSetAttribute_t)(fd_CUfunction, int, int) noexcept nogil
ctypedef fd_CUresult (*cuFuncSetCacheConfig_t)(fd_CUfunction, int) noexcept nogil
ctypedef fd_CUresult (*cuDeviceGetAttribute_t)(int*, int, int) noexcept nogil
ctypedef fd_CUresult (*cuDevicePrimaryCtxRetain_t)(fd_CUcontext*, int) noexcept nogil
ctypedef fd_CUresult (*cuCtxSetCurrent_t)(fd_CUcontext) noexcept nogil
cdef cuModuleLoadData_t _cuModuleLoadData = NULL
cdef cuModuleGetFunction_t _cuModuleGetFunction = NULL
cdef cuFuncGetAttribute_t _cuFuncGetAttribute = NULL
cdef cuFuncSetAttribute_t _cuFuncSetAttribute = NULL
cdef cuFuncSetCacheConfig_t _cuFuncSetCacheConfig = NULL
cdef cuDeviceGetAttribute_t _cuDeviceGetAttribute = NULL
cdef cuDevicePrimaryCtxRetain_t _cuDevicePrimaryCtxRetain = NULL
cdef cuCtxSetCurrent_t _cuCtxSetCurrent = NULL
cdef bint _tried = False
_load_error = None


cdef bint driver_available():
    """Open libcuda once; True when the launch entry points were found."""
    global _tried, _cuLaunchKernelEx, _cuCtxGetCurrent, _cuCtxPushCurrent, _cuCtxPopCurrent
    global _cuGetErrorName, _load_error, _cuModuleLoadData, _cuModuleGetFunction, _cuFuncGetAttribute
    global _cuFuncSetAttribute, _cuFuncSetCacheConfig, _cuDeviceGetAttribute, _cuDevicePrimaryCtxRetain
    global _cuCtxSetCurrent
    if _tried:
        return _cuLaunchKernelEx != NULL
    _tried = True
    cdef void* lib = dlopen(b"libcuda.so.1", RTLD_NOW | RTLD_LOCAL)
    if lib == NULL:
        _load_error = "libcuda.so.1 could not be opened (no NVIDIA driver on this machine)"
        return False
    _cuLaunchKernelEx = <cuLaunchKernelEx_t>dlsym(lib, b"cuLaunchKernelEx")
    _cuCtxGetCurrent = <cuCtxGetCurrent_t>dlsym(lib, b"cuCtxGetCurrent")
    _cuCtxPushCurrent = <cuCtxPushCurrent_t>dlsym(lib, b"cuCtxPushCurrent_v2")
    _cuCtxPopCurrent = <cuCtxPopCurrent_t>dlsym(lib, b"cuCtxPopCurrent_v2")
    _cuGetErrorName = <cuGetErrorName_t>dlsym(lib, b"cuGetErrorName")
    _cuModuleLoadData = <cuModuleLoadData_t>dlsym(lib, b"cuModuleLoadData")
    _cuModuleGetFunction = <cuModuleGetFunction_t>dlsym(lib, b"cuModuleGetFunction")
    _cuFuncGetAttribute = <cuFuncGetAttribute_t>dlsym(lib, b"cuFuncGetAttribute")
    _cuFuncSetAttribute = <cuFuncSetAttribute_t>dlsym(lib, b"cuFuncSetAttribute")
    _cuFuncSetCacheConfig = <cuFuncSetCacheConfig_t>dlsym(lib, b"cuFuncSetCacheConfig")
    _cuDeviceGetAttribute = <cuDeviceGetAttribute_t>dlsym(lib, b"cuDeviceGetAttribute")
    _cuDevicePrimaryCtxRetain = <cuDevicePrimaryCtxRetain_t>dlsym(lib, b"cuDevicePrimaryCtxRetain")
    _cuCtxSetCurrent = <cuCtxSetCurrent_t>dlsym(lib, b"cuCtxSetCurrent")
    if (_cuLaunchKernelEx == NULL or _cuCtxGetCurrent == NULL or _cuCtxPushCurrent == NULL
            or _cuCtxPopCurrent == NULL or _cuModuleLoadData == NULL or _cuModuleGetFunction == NULL
            or _cuFuncGetAttribute == NULL or _cuFuncSetAttribute == NULL or _cuFuncSetCacheConfig == NULL
            or _cuDeviceGetAttribute == NULL or _cuDevicePrimaryCtxRetain == NULL or _cuCtxSetCurrent == NULL):
        _cuLaunchKernelEx = NULL
        _load_error = "libcuda.so.1 lacks cuLaunchKernelEx (driver older than CUDA 12)"
        return False
    return True


def available():
    """True when libcuda was found and direct launches are possible."""
    return driver_available()


def load_error():
    """Why the driver is not available, or None."""
    driver_available()
    return _load_error


cdef int current_context(fd_CUcontext* out) noexcept nogil:
    """The calling thread's current CUDA context (a thread-local read in the driver, ~10 ns)."""
    return _cuCtxGetCurrent(out)


def current_context_handle():
    """The current context as an int (0 when none); used when a plan is built."""
    cdef fd_CUcontext ctx = NULL
    if not driver_available():
        return 0
    _cuCtxGetCurrent(&ctx)
    return <uint64_t>ctx


cdef fd_CUresult launch_plan(const LaunchPlan* plan, unsigned int gx, unsigned int gy, unsigned int gz,
                             fd_CUstream stream, const uint64_t* slots) noexcept nogil:
    """Launch ``plan`` on ``stream`` with kernel parameters read from the argument ``slots``.

    Mirrors Triton's own C launcher (3.6 and 3.9): grid x times num_ctas, 32 * num_warps
    threads, the metadata's shared bytes, and the PDL / cooperative / cluster attributes.
    A context other than the plan's is pushed around the launch (device switch guard).
    """
    cdef void* params[MAX_PARAMS]
    cdef float f32[MAX_PARAMS]
    cdef uint64_t null_ptr = 0
    cdef int i, kind
    cdef fd_CUlaunchConfig config
    cdef fd_CUcontext current = NULL
    cdef fd_CUcontext popped = NULL
    cdef fd_CUresult rc
    cdef const double* as_double
    for i in range(plan.n_params):
        kind = plan.param_kind[i]
        if kind == PARAM_F32:
            as_double = <const double*>&slots[plan.param_arg[i]]
            f32[i] = <float>as_double[0]
            params[i] = &f32[i]
        elif kind == PARAM_NULL:
            params[i] = &null_ptr
        else:
            # Pointers, ints, bools and doubles are read in place: little-endian slots hold the
            # low bytes first, and the key guarantees i32 values fit in 4 bytes.
            params[i] = <void*>&slots[plan.param_arg[i]]
    if gx == 0 or gy == 0 or gz == 0:
        return 0  # Triton launches nothing for an empty grid; neither do we
    config.gridDimX = gx * plan.num_ctas
    config.gridDimY = gy
    config.gridDimZ = gz
    config.blockDimX = plan.block_x
    config.blockDimY = 1
    config.blockDimZ = 1
    config.sharedMemBytes = plan.shared_bytes
    config.hStream = stream
    config.attrs = <fd_CUlaunchAttribute*>plan.attrs
    config.numAttrs = plan.n_attrs
    _cuCtxGetCurrent(&current)
    if current == plan.context:
        return _cuLaunchKernelEx(&config, plan.function, params, NULL)
    rc = _cuCtxPushCurrent(plan.context)
    if rc != 0:
        return rc
    rc = _cuLaunchKernelEx(&config, plan.function, params, NULL)
    _cuCtxPopCurrent(&popped)
    return rc


def load_function(bytes cubin, str name, int shared_bytes, int device):
    """Load ``cubin`` into ``device``'s current (or primary) context and return
    ``(function, context, module)`` handles as ints, raising RuntimeError on a driver error.

    Mirrors Triton's own ``load_binary`` (3.6/3.9): above 48 KiB of shared memory the function
    prefers shared memory and may use the opt-in maximum. Used instead of
    ``CompiledKernel._init_handles`` because that also builds Triton's Python launcher (on
    Triton 3.6 a C module compiled with gcc on a cold Triton cache: ~0.5 s of a cold start).
    """
    cdef fd_CUcontext ctx = NULL
    cdef void* module = NULL
    cdef fd_CUfunction function = NULL
    cdef int optin = 0, static_bytes = 0
    cdef bytes name_b = name.encode()
    if not driver_available():
        raise RuntimeError(f"fastdispatch: {_load_error}")
    _check(_cuCtxGetCurrent(&ctx), "cuCtxGetCurrent")
    if ctx == NULL:
        _check(_cuDevicePrimaryCtxRetain(&ctx, device), "cuDevicePrimaryCtxRetain")
        _check(_cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    _check(_cuModuleLoadData(&module, <const char*>cubin), "cuModuleLoadData")
    _check(_cuModuleGetFunction(&function, module, name_b), "cuModuleGetFunction")
    if shared_bytes > 49152:
        _check(_cuDeviceGetAttribute(&optin, 97, device), "cuDeviceGetAttribute(SHARED_OPTIN)")
        if optin > 49152:
            _check(_cuFuncSetCacheConfig(function, 1), "cuFuncSetCacheConfig")
            _check(_cuFuncGetAttribute(&static_bytes, 1, function), "cuFuncGetAttribute(SHARED_SIZE)")
            _check(_cuFuncSetAttribute(function, 8, optin - static_bytes), "cuFuncSetAttribute(MAX_DYNAMIC_SHARED)")
    return <uint64_t>function, <uint64_t>ctx, <uint64_t>module


cdef _check(fd_CUresult rc, str what):
    if rc != 0:
        raise RuntimeError(f"fastdispatch: {what} failed: {error_string(rc)}")


cdef str error_string(fd_CUresult rc):
    cdef const char* name = NULL
    if _cuGetErrorName != NULL and _cuGetErrorName(rc, &name) == 0 and name != NULL:
        return f"{name.decode()} ({rc})"
    return f"CUresult {rc}"
