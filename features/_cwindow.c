/* The C twin of features/windows.py's EventWindow (same methods, same results, bit for bit).
 *
 * features/windows.py is the definition; this file keeps one entity's events in
 * contiguous int64/double arrays instead of Python lists of boxed numbers, which
 * is where the per-event time of the window went (pointer chasing through boxed
 * ints and floats). Every arithmetic step is the one the Python code does, in the
 * same order: prefix[k] is the left-to-right sum of amounts[:k], recomputed the
 * same way after an insertion in the middle or a drop, so both implementations
 * give identical doubles (tests/features/test_windows.py runs both against a
 * brute force and against each other).
 *
 * Built by setup.py as an optional extension; features/cwindow.py uses it only
 * when it was built from this very source (SOURCE_CRC32).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifndef SOURCE_CRC32
#define SOURCE_CRC32 0
#endif

#define MAX_STEPS 8
#define MAX_WINDOWS 16
#define NO_FLOOR (-((int64_t)1 << 62))

typedef struct {
    PyObject_HEAD
    int64_t *times;
    double *amounts;
    double *prefix; /* n + 1 entries */
    Py_ssize_t n;
    Py_ssize_t cap; /* capacity of times/amounts; prefix has cap + 1 */
    Py_ssize_t nstarts;
    Py_ssize_t starts[MAX_WINDOWS];
} Window;

static int
reserve(Window *self, Py_ssize_t need)
{
    if (need <= self->cap)
        return 0;
    Py_ssize_t cap = self->cap ? self->cap : 4;
    while (cap < need)
        cap += cap >> 1 > 4 ? cap >> 1 : 4;
    int64_t *times = PyMem_Realloc(self->times, (size_t)cap * sizeof(int64_t));
    if (times == NULL)
        goto fail;
    self->times = times;
    double *amounts = PyMem_Realloc(self->amounts, (size_t)cap * sizeof(double));
    if (amounts == NULL)
        goto fail;
    self->amounts = amounts;
    double *prefix = PyMem_Realloc(self->prefix, (size_t)(cap + 1) * sizeof(double));
    if (prefix == NULL)
        goto fail;
    self->prefix = prefix;
    self->cap = cap;
    return 0;
fail:
    PyErr_NoMemory();
    return -1;
}

static void
recompute_prefix(Window *self, Py_ssize_t from)
{
    /* prefix[k + 1] = prefix[k] + amounts[k] for k >= from (prefix[0] is 0.0) */
    if (from == 0)
        self->prefix[0] = 0.0;
    for (Py_ssize_t k = from; k < self->n; k++)
        self->prefix[k + 1] = self->prefix[k] + self->amounts[k];
}

static Py_ssize_t
bisect_right(const int64_t *a, int64_t x, Py_ssize_t lo, Py_ssize_t hi)
{
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) >> 1;
        if (x < a[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static int
as_i64(PyObject *o, int64_t *out, const char *what)
{
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "EventWindow: %s must be an int (epoch ms), got %R", what, o);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

static int
as_index(PyObject *o, Py_ssize_t *out, const char *what)
{
    Py_ssize_t v = PyLong_AsSsize_t(o);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "EventWindow: %s must be an int, got %R", what, o);
        return -1;
    }
    *out = v;
    return 0;
}

/* Positional and keyword arguments of a METH_FASTCALL | METH_KEYWORDS method, by name, into slots[]. */
static int
bind_args(const char *method, const char *const *names, Py_ssize_t required, Py_ssize_t total,
          PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **slots)
{
    for (Py_ssize_t i = 0; i < total; i++)
        slots[i] = NULL;
    if (nargs > total) {
        PyErr_Format(PyExc_TypeError, "%s takes at most %zd arguments (%zd given)", method, total, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        slots[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = 0;
        while (i < total && PyUnicode_CompareWithASCIIString(name, names[i]) != 0)
            i++;
        if (i == total || slots[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s got an unexpected or repeated argument %R", method, name);
            return -1;
        }
        slots[i] = args[nargs + k];
    }
    for (Py_ssize_t i = 0; i < required; i++) {
        if (slots[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s missing required argument '%s'", method, names[i]);
            return -1;
        }
    }
    return 0;
}

static void
Window_dealloc(Window *self)
{
    PyMem_Free(self->times);
    PyMem_Free(self->amounts);
    PyMem_Free(self->prefix);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Window_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Window *self = (Window *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->prefix = PyMem_Malloc(sizeof(double));
    if (self->prefix == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->prefix[0] = 0.0;
    return (PyObject *)self;
}

static int
Window_init(Window *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"times", "amounts", NULL};
    PyObject *times = Py_None, *amounts = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:EventWindow", kwlist, &times, &amounts))
        return -1;
    self->n = 0;
    self->nstarts = 0;
    if (times == Py_None && amounts == Py_None) {
        self->prefix[0] = 0.0;
        return 0;
    }
    if (times == Py_None || amounts == Py_None) {
        PyErr_SetString(PyExc_ValueError, "EventWindow: give both times and amounts, or neither");
        return -1;
    }
    PyObject *t = PySequence_Fast(times, "EventWindow: times must be a sequence of ints");
    if (t == NULL)
        return -1;
    PyObject *a = PySequence_Fast(amounts, "EventWindow: amounts must be a sequence of floats");
    if (a == NULL) {
        Py_DECREF(t);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(t);
    if (PySequence_Fast_GET_SIZE(a) != n) {
        PyErr_Format(PyExc_ValueError, "EventWindow: %zd times but %zd amounts", n, PySequence_Fast_GET_SIZE(a));
        goto fail;
    }
    if (reserve(self, n) < 0)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (as_i64(PySequence_Fast_GET_ITEM(t, i), &self->times[i], "a time") < 0)
            goto fail;
        double v = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(a, i));
        if (v == -1.0 && PyErr_Occurred())
            goto fail;
        self->amounts[i] = v;
    }
    self->n = n;
    recompute_prefix(self, 0);
    Py_DECREF(t);
    Py_DECREF(a);
    return 0;
fail:
    Py_DECREF(t);
    Py_DECREF(a);
    return -1;
}

static Py_ssize_t
Window_len(Window *self)
{
    return self->n;
}

/* insert(event_time_ms, amount) -> index just past the new event */
static PyObject *
Window_insert(Window *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t t;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "insert(event_time_ms, amount)");
        return NULL;
    }
    if (as_i64(args[0], &t, "event_time_ms") < 0)
        return NULL;
    double amount = PyFloat_AsDouble(args[1]);
    if (amount == -1.0 && PyErr_Occurred())
        return NULL;
    if (reserve(self, self->n + 1) < 0)
        return NULL;
    Py_ssize_t n = self->n;
    if (n == 0 || t >= self->times[n - 1]) {
        self->times[n] = t;
        self->amounts[n] = amount;
        self->prefix[n + 1] = self->prefix[n] + amount;
        self->n = n + 1;
        return PyLong_FromSsize_t(n + 1);
    }
    Py_ssize_t index = bisect_right(self->times, t, 0, n);
    memmove(self->times + index + 1, self->times + index, (size_t)(n - index) * sizeof(int64_t));
    memmove(self->amounts + index + 1, self->amounts + index, (size_t)(n - index) * sizeof(double));
    self->times[index] = t;
    self->amounts[index] = amount;
    self->n = n + 1;
    recompute_prefix(self, index);
    return PyLong_FromSsize_t(index + 1);
}

static PyObject *
Window_end_index(Window *self, PyObject *arg)
{
    int64_t t;
    if (as_i64(arg, &t, "event_time_ms") < 0)
        return NULL;
    return PyLong_FromSsize_t(bisect_right(self->times, t, 0, self->n));
}

/* aggregate(event_time_ms, window_ms, end=None) -> (count, sum) over (t - window, t] */
static PyObject *
Window_aggregate(Window *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"event_time_ms", "window_ms", "end"};
    PyObject *slots[3];
    int64_t t, w;
    Py_ssize_t hi;
    if (bind_args("aggregate()", names, 2, 3, args, nargs, kwnames, slots) < 0)
        return NULL;
    if (as_i64(slots[0], &t, "event_time_ms") < 0 || as_i64(slots[1], &w, "window_ms") < 0)
        return NULL;
    if (slots[2] != NULL && slots[2] != Py_None) {
        if (as_index(slots[2], &hi, "end") < 0)
            return NULL;
        if (hi < 0 || hi > self->n) {
            PyErr_Format(PyExc_IndexError, "EventWindow.aggregate: end %zd outside 0..%zd", hi, self->n);
            return NULL;
        }
    }
    else {
        hi = bisect_right(self->times, t, 0, self->n);
    }
    Py_ssize_t lo = bisect_right(self->times, t - w, 0, hi);
    return Py_BuildValue("(nd)", hi - lo, self->prefix[hi] - self->prefix[lo]);
}

static int
append_float(PyObject *out, double value)
{
    PyObject *f = PyFloat_FromDouble(value);
    if (f == NULL)
        return -1;
    int rc = PyList_Append(out, f);
    Py_DECREF(f);
    return rc;
}

/* aggregates_into(event_time_ms, windows_ms, end, out, floor_ms=-(2**62)): append count, sum
 * and mean of each window (ascending) to the list out; see windows.py for the hint walk. */
static PyObject *
Window_aggregates_into(Window *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t t, floor_ms = NO_FLOOR;
    Py_ssize_t end;
    if (nargs < 4 || nargs > 5) {
        PyErr_SetString(PyExc_TypeError, "aggregates_into(event_time_ms, windows_ms, end, out, floor_ms=...)");
        return NULL;
    }
    if (as_i64(args[0], &t, "event_time_ms") < 0 || as_index(args[2], &end, "end") < 0)
        return NULL;
    if (nargs == 5 && as_i64(args[4], &floor_ms, "floor_ms") < 0)
        return NULL;
    PyObject *windows = args[1], *out = args[3];
    if (!PyTuple_Check(windows) || !PyList_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "aggregates_into: windows_ms must be a tuple and out a list");
        return NULL;
    }
    if (end < 0 || end > self->n) {
        PyErr_Format(PyExc_IndexError, "EventWindow.aggregates_into: end %zd outside 0..%zd", end, self->n);
        return NULL;
    }
    Py_ssize_t nw = PyTuple_GET_SIZE(windows);
    if (nw > MAX_WINDOWS) {
        PyErr_Format(PyExc_ValueError, "EventWindow: at most %d windows, got %zd", MAX_WINDOWS, nw);
        return NULL;
    }
    const int64_t *times = self->times;
    const double *prefix = self->prefix;
    double top = prefix[end];
    if (self->nstarts != nw) {
        for (Py_ssize_t w = 0; w < nw; w++)
            self->starts[w] = end;
        self->nstarts = nw;
    }
    for (Py_ssize_t w = 0; w < nw; w++) {
        int64_t window_ms;
        if (as_i64(PyTuple_GET_ITEM(windows, w), &window_ms, "a window length") < 0)
            return NULL;
        int64_t threshold = t - window_ms;
        if (threshold < floor_ms)
            threshold = floor_ms;
        Py_ssize_t lo = self->starts[w];
        if (lo > end)
            lo = end;
        int steps = 0;
        while (lo < end && times[lo] <= threshold) {
            lo++;
            if (++steps == MAX_STEPS) {
                lo = bisect_right(times, threshold, lo, end);
                break;
            }
        }
        steps = 0;
        while (lo > 0 && times[lo - 1] > threshold) {
            lo--;
            if (++steps == MAX_STEPS) {
                lo = bisect_right(times, threshold, 0, lo);
                break;
            }
        }
        self->starts[w] = lo;
        Py_ssize_t count = end - lo;
        double total = top - prefix[lo];
        if (append_float(out, (double)count) < 0 || append_float(out, total) < 0 ||
            append_float(out, count ? total / (double)count : 0.0) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Window_previous_time(Window *self, PyObject *arg)
{
    Py_ssize_t end;
    if (as_index(arg, &end, "end") < 0)
        return NULL;
    if (end > self->n + 1) {
        PyErr_Format(PyExc_IndexError, "EventWindow.previous_time: end %zd beyond %zd events", end, self->n);
        return NULL;
    }
    if (end >= 2)
        return PyLong_FromLongLong(self->times[end - 2]);
    Py_RETURN_NONE;
}

static Py_ssize_t
drop_oldest(Window *self, Py_ssize_t count)
{
    if (count > self->n)
        count = self->n;
    if (count <= 0)
        return 0;
    Py_ssize_t left = self->n - count;
    memmove(self->times, self->times + count, (size_t)left * sizeof(int64_t));
    memmove(self->amounts, self->amounts + count, (size_t)left * sizeof(double));
    self->n = left;
    recompute_prefix(self, 0);
    for (Py_ssize_t w = 0; w < self->nstarts; w++)
        self->starts[w] = self->starts[w] > count ? self->starts[w] - count : 0;
    return count;
}

/* expire(through, min_chunk=8): drop events at or before through once min_chunk have expired */
static PyObject *
Window_expire(Window *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"through", "min_chunk"};
    PyObject *slots[2];
    int64_t through;
    Py_ssize_t min_chunk = 8;
    if (nargs == 1 && kwnames == NULL) {
        slots[0] = args[0];
        slots[1] = NULL;
    }
    else if (bind_args("expire()", names, 1, 2, args, nargs, kwnames, slots) < 0)
        return NULL;
    if (as_i64(slots[0], &through, "through") < 0)
        return NULL;
    if (slots[1] != NULL && as_index(slots[1], &min_chunk, "min_chunk") < 0)
        return NULL;
    if (self->n == 0 || self->times[0] > through)
        return PyLong_FromLong(0);
    Py_ssize_t count = bisect_right(self->times, through, 0, self->n);
    if (count < min_chunk && count < self->n)
        return PyLong_FromLong(0);
    return PyLong_FromSsize_t(drop_oldest(self, count));
}

static PyObject *
Window_drop_oldest(Window *self, PyObject *arg)
{
    Py_ssize_t count;
    if (as_index(arg, &count, "count") < 0)
        return NULL;
    return PyLong_FromSsize_t(drop_oldest(self, count));
}

static PyObject *
Window_get_times(Window *self, void *closure)
{
    PyObject *list = PyList_New(self->n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *v = PyLong_FromLongLong(self->times[i]);
        if (v == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

static PyObject *
float_list(const double *values, Py_ssize_t n)
{
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyFloat_FromDouble(values[i]);
        if (v == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

static PyObject *
Window_get_amounts(Window *self, void *closure)
{
    return float_list(self->amounts, self->n);
}

static PyObject *
Window_get_prefix(Window *self, void *closure)
{
    return float_list(self->prefix, self->n + 1);
}

static PyObject *
Window_get_starts(Window *self, void *closure)
{
    PyObject *list = PyList_New(self->nstarts);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->nstarts; i++) {
        PyObject *v = PyLong_FromSsize_t(self->starts[i]);
        if (v == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

/* times_bytes() / amounts_bytes(): the raw little-endian int64 / float64 arrays (checkpoints) */
static PyObject *
Window_times_bytes(Window *self, PyObject *unused)
{
    return PyBytes_FromStringAndSize((const char *)self->times, self->n * (Py_ssize_t)sizeof(int64_t));
}

static PyObject *
Window_amounts_bytes(Window *self, PyObject *unused)
{
    return PyBytes_FromStringAndSize((const char *)self->amounts, self->n * (Py_ssize_t)sizeof(double));
}

static PyMethodDef Window_methods[] = {
    {"insert", (PyCFunction)(void (*)(void))Window_insert, METH_FASTCALL,
     "Add an event; return the index just past it."},
    {"end_index", (PyCFunction)Window_end_index, METH_O, "Index just past the last event at or before t."},
    {"aggregate", (PyCFunction)(void (*)(void))Window_aggregate, METH_FASTCALL | METH_KEYWORDS,
     "(count, sum) of events in (t - window, t]."},
    {"aggregates_into", (PyCFunction)(void (*)(void))Window_aggregates_into, METH_FASTCALL,
     "Append count, sum and mean for each window to out."},
    {"previous_time", (PyCFunction)Window_previous_time, METH_O, "Event time before index end - 1, or None."},
    {"expire", (PyCFunction)(void (*)(void))Window_expire, METH_FASTCALL | METH_KEYWORDS,
     "Drop events at or before through once at least min_chunk have expired."},
    {"drop_oldest", (PyCFunction)Window_drop_oldest, METH_O, "Drop the count oldest events."},
    {"times_bytes", (PyCFunction)Window_times_bytes, METH_NOARGS, "Event times as raw int64."},
    {"amounts_bytes", (PyCFunction)Window_amounts_bytes, METH_NOARGS, "Amounts as raw float64."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Window_getset[] = {
    {"times", (getter)Window_get_times, NULL, "Event times (epoch ms), ascending (a copy).", NULL},
    {"amounts", (getter)Window_get_amounts, NULL, "Amounts in event-time order (a copy).", NULL},
    {"prefix", (getter)Window_get_prefix, NULL, "Prefix sums of the amounts (a copy).", NULL},
    {"starts", (getter)Window_get_starts, NULL, "Window start hints (a copy).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Window_as_sequence = {
    .sq_length = (lenfunc)Window_len,
};

static PyTypeObject WindowType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "features._cwindow.EventWindow",
    .tp_doc = "One entity's events in event-time order (C twin of features.windows.EventWindow).",
    .tp_basicsize = sizeof(Window),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Window_new,
    .tp_init = (initproc)Window_init,
    .tp_dealloc = (destructor)Window_dealloc,
    .tp_methods = Window_methods,
    .tp_getset = Window_getset,
    .tp_as_sequence = &Window_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "features._cwindow",
    .m_doc = "C twin of features.windows.EventWindow (see features/cwindow.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__cwindow(void)
{
    if (PyType_Ready(&WindowType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&WindowType);
    if (PyModule_AddObject(m, "EventWindow", (PyObject *)&WindowType) < 0) {
        Py_DECREF(&WindowType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObject(m, "SOURCE_CRC32", PyLong_FromUnsignedLong((unsigned long)SOURCE_CRC32)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
