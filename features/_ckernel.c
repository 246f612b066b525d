/* C twins of features/windows.py's EventWindow and features/novelty.py's RecentDistinct
 * (same methods, same results, bit for bit).
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
 * Built by setup.py as an optional extension; features/ckernel.py uses it only
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

static PyObject *i64_list(const int64_t *values, Py_ssize_t n);

static PyObject *
Window_get_times(Window *self, void *closure)
{
    return i64_list(self->times, self->n);
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
    .tp_name = "features._ckernel.EventWindow",
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


/* ------------------------------------------------------------------------------------------------
 * RecentDistinct: (time, merchant hash, country hash) of recent events, in arrival order
 * (the C twin of features/novelty.py's RecentDistinct).
 */
typedef struct {
    PyObject_HEAD
    int64_t *times;
    uint32_t *merchants;
    uint32_t *countries;
    Py_ssize_t n;
    Py_ssize_t cap;
} Recent;

static int
recent_reserve(Recent *self, Py_ssize_t need)
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
    uint32_t *merchants = PyMem_Realloc(self->merchants, (size_t)cap * sizeof(uint32_t));
    if (merchants == NULL)
        goto fail;
    self->merchants = merchants;
    uint32_t *countries = PyMem_Realloc(self->countries, (size_t)cap * sizeof(uint32_t));
    if (countries == NULL)
        goto fail;
    self->countries = countries;
    self->cap = cap;
    return 0;
fail:
    PyErr_NoMemory();
    return -1;
}

static int
as_hash(PyObject *o, uint32_t *out, const char *what)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "RecentDistinct: %s must be a 32-bit unsigned hash, got %R", what, o);
        return -1;
    }
    if (v > 0xFFFFFFFFULL) {
        PyErr_Format(PyExc_OverflowError, "RecentDistinct: %s must be a 32-bit unsigned hash, got %R", what, o);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static void
recent_drop_front(Recent *self, Py_ssize_t count)
{
    if (count <= 0)
        return;
    if (count > self->n)
        count = self->n;
    Py_ssize_t left = self->n - count;
    memmove(self->times, self->times + count, (size_t)left * sizeof(int64_t));
    memmove(self->merchants, self->merchants + count, (size_t)left * sizeof(uint32_t));
    memmove(self->countries, self->countries + count, (size_t)left * sizeof(uint32_t));
    self->n = left;
}

static void
Recent_dealloc(Recent *self)
{
    PyMem_Free(self->times);
    PyMem_Free(self->merchants);
    PyMem_Free(self->countries);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Recent_init(Recent *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"times", "merchants", "countries", NULL};
    PyObject *seqs[3] = {Py_None, Py_None, Py_None};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OOO:RecentDistinct", kwlist, &seqs[0], &seqs[1], &seqs[2]))
        return -1;
    self->n = 0;
    if (seqs[0] == Py_None && seqs[1] == Py_None && seqs[2] == Py_None)
        return 0;
    if (seqs[0] == Py_None || seqs[1] == Py_None || seqs[2] == Py_None) {
        PyErr_SetString(PyExc_ValueError, "RecentDistinct: give times, merchants and countries, or none");
        return -1;
    }
    PyObject *fast[3] = {NULL, NULL, NULL};
    int rc = -1;
    for (int k = 0; k < 3; k++) {
        fast[k] = PySequence_Fast(seqs[k], "RecentDistinct: times, merchants and countries must be sequences");
        if (fast[k] == NULL)
            goto done;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast[0]);
    if (PySequence_Fast_GET_SIZE(fast[1]) != n || PySequence_Fast_GET_SIZE(fast[2]) != n) {
        PyErr_Format(PyExc_ValueError, "RecentDistinct: %zd times, %zd merchants, %zd countries", n,
                     PySequence_Fast_GET_SIZE(fast[1]), PySequence_Fast_GET_SIZE(fast[2]));
        goto done;
    }
    if (recent_reserve(self, n) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (as_i64(PySequence_Fast_GET_ITEM(fast[0], i), &self->times[i], "a time") < 0 ||
            as_hash(PySequence_Fast_GET_ITEM(fast[1], i), &self->merchants[i], "a merchant") < 0 ||
            as_hash(PySequence_Fast_GET_ITEM(fast[2], i), &self->countries[i], "a country") < 0)
            goto done;
    }
    self->n = n;
    rc = 0;
done:
    for (int k = 0; k < 3; k++)
        Py_XDECREF(fast[k]);
    return rc;
}

static Py_ssize_t
Recent_len(Recent *self)
{
    return self->n;
}

/* add(event_time_ms, merchant, country, max_entries=2000) */
static PyObject *
Recent_add(Recent *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t t;
    uint32_t merchant, country;
    Py_ssize_t max_entries = 2000;
    if (nargs < 3 || nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "add(event_time_ms, merchant, country, max_entries=2000)");
        return NULL;
    }
    if (as_i64(args[0], &t, "event_time_ms") < 0 || as_hash(args[1], &merchant, "merchant") < 0 ||
        as_hash(args[2], &country, "country") < 0)
        return NULL;
    if (nargs == 4 && as_index(args[3], &max_entries, "max_entries") < 0)
        return NULL;
    if (recent_reserve(self, self->n + 1) < 0)
        return NULL;
    self->times[self->n] = t;
    self->merchants[self->n] = merchant;
    self->countries[self->n] = country;
    self->n++;
    if (self->n > max_entries)
        recent_drop_front(self, self->n - max_entries);
    Py_RETURN_NONE;
}

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* distinct non-zero values among values[0..n) */
static Py_ssize_t
count_distinct(uint32_t *values, Py_ssize_t n)
{
    Py_ssize_t distinct = 0;
    if (n <= 32) {
        for (Py_ssize_t i = 0; i < n; i++) {
            if (values[i] == 0)
                continue;
            Py_ssize_t j = 0;
            while (j < i && values[j] != values[i])
                j++;
            distinct += j == i;
        }
        return distinct;
    }
    qsort(values, (size_t)n, sizeof(uint32_t), cmp_u32);
    for (Py_ssize_t i = 0; i < n; i++)
        distinct += values[i] != 0 && (i == 0 || values[i] != values[i - 1]);
    return distinct;
}

/* distinct(event_time_ms, window_ms, floor_ms=-(2**62)) -> (merchants, countries) with time in
 * (max(t - window, floor), t] */
static PyObject *
Recent_distinct(Recent *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"event_time_ms", "window_ms", "floor_ms"};
    PyObject *slots[3];
    int64_t t, window, floor_ms = NO_FLOOR;
    if (bind_args("distinct()", names, 2, 3, args, nargs, kwnames, slots) < 0)
        return NULL;
    if (as_i64(slots[0], &t, "event_time_ms") < 0 || as_i64(slots[1], &window, "window_ms") < 0)
        return NULL;
    if (slots[2] != NULL && as_i64(slots[2], &floor_ms, "floor_ms") < 0)
        return NULL;
    int64_t start = t - window;
    if (start < floor_ms)
        start = floor_ms;
    uint32_t stack_m[64], stack_c[64];
    uint32_t *m = stack_m, *c = stack_c;
    if (self->n > 64) {
        m = PyMem_Malloc((size_t)self->n * sizeof(uint32_t));
        c = PyMem_Malloc((size_t)self->n * sizeof(uint32_t));
        if (m == NULL || c == NULL) {
            PyMem_Free(m);
            PyMem_Free(c);
            return PyErr_NoMemory();
        }
    }
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        int64_t time = self->times[i];
        if (start < time && time <= t) {
            m[k] = self->merchants[i];
            c[k] = self->countries[i];
            k++;
        }
    }
    Py_ssize_t merchants = count_distinct(m, k), countries = count_distinct(c, k);
    if (m != stack_m) {
        PyMem_Free(m);
        PyMem_Free(c);
    }
    return Py_BuildValue("(nn)", merchants, countries);
}

static Py_ssize_t
recent_expire(Recent *self, int64_t through)
{
    Py_ssize_t count = 0;
    while (count < self->n && self->times[count] <= through)
        count++;
    recent_drop_front(self, count);
    return count;
}

/* expire(through): forget the leading events at or before through */
static PyObject *
Recent_expire(Recent *self, PyObject *arg)
{
    int64_t through;
    if (as_i64(arg, &through, "through") < 0)
        return NULL;
    recent_expire(self, through);
    Py_RETURN_NONE;
}

/* trim(through, keep=4): expire once more than keep entries are held and the oldest is due */
static PyObject *
Recent_trim(Recent *self, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t through;
    Py_ssize_t keep = 4;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "trim(through, keep=4)");
        return NULL;
    }
    if (as_i64(args[0], &through, "through") < 0)
        return NULL;
    if (nargs == 2 && as_index(args[1], &keep, "keep") < 0)
        return NULL;
    if (self->n > keep && self->times[0] <= through)
        recent_expire(self, through);
    Py_RETURN_NONE;
}

static PyObject *
u32_list(const uint32_t *values, Py_ssize_t n)
{
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLong(values[i]);
        if (v == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

static PyObject *
i64_list(const int64_t *values, Py_ssize_t n)
{
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLongLong(values[i]);
        if (v == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

static PyObject *
Recent_get_times(Recent *self, void *closure)
{
    return i64_list(self->times, self->n);
}

static PyObject *
Recent_get_merchants(Recent *self, void *closure)
{
    return u32_list(self->merchants, self->n);
}

static PyObject *
Recent_get_countries(Recent *self, void *closure)
{
    return u32_list(self->countries, self->n);
}

static PyObject *
Recent_times_bytes(Recent *self, PyObject *unused)
{
    return PyBytes_FromStringAndSize((const char *)self->times, self->n * (Py_ssize_t)sizeof(int64_t));
}

static PyObject *
Recent_merchants_bytes(Recent *self, PyObject *unused)
{
    return PyBytes_FromStringAndSize((const char *)self->merchants, self->n * (Py_ssize_t)sizeof(uint32_t));
}

static PyObject *
Recent_countries_bytes(Recent *self, PyObject *unused)
{
    return PyBytes_FromStringAndSize((const char *)self->countries, self->n * (Py_ssize_t)sizeof(uint32_t));
}

static PyMethodDef Recent_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Recent_add, METH_FASTCALL, "Remember an event (hashes; 0 = absent)."},
    {"distinct", (PyCFunction)(void (*)(void))Recent_distinct, METH_FASTCALL | METH_KEYWORDS,
     "Distinct non-zero merchants and countries with time in (max(t - window, floor), t]."},
    {"expire", (PyCFunction)Recent_expire, METH_O, "Forget the leading events at or before through."},
    {"trim", (PyCFunction)(void (*)(void))Recent_trim, METH_FASTCALL,
     "Expire once more than keep entries are held and the oldest is due."},
    {"times_bytes", (PyCFunction)Recent_times_bytes, METH_NOARGS, "Times as raw int64."},
    {"merchants_bytes", (PyCFunction)Recent_merchants_bytes, METH_NOARGS, "Merchant hashes as raw uint32."},
    {"countries_bytes", (PyCFunction)Recent_countries_bytes, METH_NOARGS, "Country hashes as raw uint32."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Recent_getset[] = {
    {"times", (getter)Recent_get_times, NULL, "Event times, arrival order (a copy).", NULL},
    {"merchants", (getter)Recent_get_merchants, NULL, "Merchant hashes (a copy).", NULL},
    {"countries", (getter)Recent_get_countries, NULL, "Country hashes (a copy).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Recent_as_sequence = {
    .sq_length = (lenfunc)Recent_len,
};

static PyTypeObject RecentType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "features._ckernel.RecentDistinct",
    .tp_doc = "Recent (time, merchant, country) hashes (C twin of features.novelty.RecentDistinct).",
    .tp_basicsize = sizeof(Recent),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Recent_init,
    .tp_dealloc = (destructor)Recent_dealloc,
    .tp_methods = Recent_methods,
    .tp_getset = Recent_getset,
    .tp_as_sequence = &Recent_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "features._ckernel",
    .m_doc = "C twins of EventWindow and RecentDistinct (see features/ckernel.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__ckernel(void)
{
    if (PyType_Ready(&WindowType) < 0 || PyType_Ready(&RecentType) < 0)
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
    Py_INCREF(&RecentType);
    if (PyModule_AddObject(m, "RecentDistinct", (PyObject *)&RecentType) < 0) {
        Py_DECREF(&RecentType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObject(m, "SOURCE_CRC32", PyLong_FromUnsignedLong((unsigned long)SOURCE_CRC32)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
