# Included by _keys.pyx (one Cython module: the classes share its C-level state).
# The per-call checks a direct entry makes before it launches (Triton's "global changed" check,
# launch hooks) and the Triton knob word of every Triton key (per call).

cdef bint _globals_changed(tuple guard) except -1:
    # Triton's own check is ``globals_dict.get(name) != value``. For a ``tl.constexpr`` global
    # (Helion's block sizes) the guard holds the live object (backends/triton/kernel.py
    # ``_guard_value``), so identity answers first: ``!=`` on a constexpr is a Python method
    # that builds another constexpr, ~1.1 us per global on the CI host, 1-2 us on the lent
    # H200. (A value unequal to itself, a NaN float, is "unchanged" here; Triton would report
    # it changed on every call.)
    cdef PyObject* found
    for globals_dict, name, value in guard:
        if type(globals_dict) is dict:
            found = PyDict_GetItem(globals_dict, name)
            if found == NULL:
                return True
            if <object>found is value:
                continue
            if <object>found != value:
                return True
        elif globals_dict.get(name, _MISSING) != value:
            return True
    return False

cdef object _MISSING = object()


# Triton's launch hooks, seen through the runtime knobs object's instance dict: assigning
# `triton.knobs.runtime.launch_enter_hook = ...` puts the new value there, while the default
# HookChain lives on the class and is mutated in place by HookChain.add/remove. So the common
# case is two dict probes and two list sizes (~20 ns, vs ~70 ns for getattrs).
cdef object _rt_dict = None          # triton.knobs.runtime.__dict__
cdef object _comp_dict = None        # triton.knobs.compilation.__dict__
cdef object _rt_debug_default = False      # class-level defaults of the two codegen knobs
cdef object _comp_mode_default = ""
cdef object _enter_calls = None      # the class-level default chains' call lists
cdef object _exit_calls = None

cdef bint _hooks_active(object rt) except -1:
    cdef PyObject* enter = PyDict_GetItem(_rt_dict, "launch_enter_hook")
    cdef PyObject* exit_ = PyDict_GetItem(_rt_dict, "launch_exit_hook")
    if enter == NULL and exit_ == NULL and _enter_calls is not None:
        return PyList_GET_SIZE(_enter_calls) != 0 or PyList_GET_SIZE(_exit_calls) != 0
    for hook in (rt.launch_enter_hook, rt.launch_exit_hook):   # replaced: the general check
        if hook is None:
            continue
        if type(hook) is _hookchain_type and PyList_GET_SIZE(hook.calls) == 0:
            continue
        return True
    return False


cdef object _last_mode = None
cdef uint64_t _last_mode_id = 0

cdef inline uint64_t _knob_word(object rt, object comp) except? 0:
    # Instance-dict probes first (where `knobs.runtime.debug = ...` and refresh_knobs() write),
    # then the class defaults captured by set_triton_hooks: two dict probes (~25 ns) instead of
    # two getattrs that miss the instance dict before finding the class attribute.
    global _last_mode, _last_mode_id
    cdef PyObject* debug = NULL
    cdef PyObject* mode_p = NULL
    cdef object debug_value, mode
    if _rt_dict is not None:
        debug = PyDict_GetItem(_rt_dict, "debug")
        mode_p = PyDict_GetItem(_comp_dict, "instrumentation_mode")
        debug_value = <object>debug if debug != NULL else _rt_debug_default
        mode = <object>mode_p if mode_p != NULL else _comp_mode_default
    else:
        debug_value = rt.debug
        mode = comp.instrumentation_mode
    if mode is not _last_mode:   # the knob is almost always the same str object: skip the dict
        _last_mode_id = <uint64_t>(<long long>intern_id(mode))
        _last_mode = mode
    return T_KNOBS | ((<uint64_t>(<bint>debug_value)) << 8) | (_last_mode_id << 16)
