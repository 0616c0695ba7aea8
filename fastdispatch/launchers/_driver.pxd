# The CUDA driver, loaded at run time (dlopen "libcuda.so.1"): no CUDA headers or toolkit at
# build time. Only the handful of entry points the hot path needs are declared here; their
# layouts are the driver ABI's (cuda.h 12.x/13.x), checked against cuda-bindings' cydriver.pxd.
from libc.stdint cimport uint64_t, int64_t, uint32_t, int32_t

cdef extern from *:
    """
    typedef int fd_CUresult;
    typedef void* fd_CUstream;
    typedef void* fd_CUfunction;
    typedef void* fd_CUcontext;
    typedef struct { unsigned int x, y, z; } fd_dim3;
    typedef union { char pad[64]; int i; fd_dim3 clusterDim; } fd_CUlaunchAttributeValue;
    typedef struct { int id; char pad[4]; fd_CUlaunchAttributeValue value; } fd_CUlaunchAttribute;
    typedef struct {
        unsigned int gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes;
        fd_CUstream hStream;
        fd_CUlaunchAttribute* attrs;
        unsigned int numAttrs;
    } fd_CUlaunchConfig;
    """
    ctypedef int fd_CUresult
    ctypedef void* fd_CUstream
    ctypedef void* fd_CUfunction
    ctypedef void* fd_CUcontext
    ctypedef struct fd_dim3:
        unsigned int x, y, z
    ctypedef union fd_CUlaunchAttributeValue:
        int i
        fd_dim3 clusterDim
    ctypedef struct fd_CUlaunchAttribute:
        int id
        fd_CUlaunchAttributeValue value
    ctypedef struct fd_CUlaunchConfig:
        unsigned int gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes
        fd_CUstream hStream
        fd_CUlaunchAttribute* attrs
        unsigned int numAttrs

# Kinds of one kernel parameter in a launch plan: where its bytes come from in the per-call
# argument slots built by the key builder (one 8-byte slot per positional argument).
cdef enum ParamKind:
    PARAM_PTR = 0      # tensor data pointer (uint64 slot)
    PARAM_I32 = 1      # int slot, low 4 bytes (the key guarantees the value fits)
    PARAM_I64 = 2      # int slot, 8 bytes (also u64)
    PARAM_U8 = 3       # bool slot, low byte
    PARAM_F32 = 4      # float slot (a double), narrowed to float at launch
    PARAM_F64 = 5      # float slot, 8 bytes
    PARAM_NULL = 6     # Triton's trailing scratch pointers when their sizes are 0

cdef enum:
    MAX_PARAMS = 128
    MAX_ATTRS = 4

# An immutable launch plan, computed once per cache entry (compile time), so a launch is a table walk.
cdef struct LaunchPlan:
    fd_CUfunction function
    fd_CUcontext context          # primary context the function was loaded in
    unsigned int grid[3]          # static grid, when has_static_grid
    unsigned int block_x
    unsigned int num_ctas         # Triton multiplies grid x by num_ctas
    unsigned int shared_bytes
    int n_params
    int param_kind[MAX_PARAMS]
    int param_arg[MAX_PARAMS]     # index into the argument slots
    int n_attrs
    fd_CUlaunchAttribute attrs[MAX_ATTRS]

cdef bint driver_available()
cdef int current_context(fd_CUcontext* out) noexcept nogil
cdef fd_CUresult launch_plan(const LaunchPlan* plan, unsigned int gx, unsigned int gy, unsigned int gz,
                             fd_CUstream stream, const uint64_t* slots) noexcept nogil
cdef str error_string(fd_CUresult rc)
