/*
 * Optional C speedups for greenws.
 *
 * RFC 6455 masking XORs every payload byte with a 4-byte key.  In pure
 * Python that is the most expensive step of receiving (server) or sending
 * (client) a large message; here it runs eight bytes at a time.  greenws
 * falls back to its pure-Python version when this module is not built.
 *
 * Both functions build their result in one allocation: apply_mask copies an
 * optional prefix (a frame header) in front, unmask_parts unmasks a payload
 * that arrived in several reads without joining them first.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Large payloads are masked with the GIL released, so other threads run. */
#define RELEASE_GIL_ABOVE 65536

/*
 * out[i] = in[i] ^ key[(phase + i) % 4] for i < n.  The caller owns both
 * buffers for the duration (the GIL may be released here).
 */
static void
xor_into(unsigned char *out, const unsigned char *in, Py_ssize_t n,
         const unsigned char *key, Py_ssize_t phase)
{
    unsigned char key8[8];
    uint64_t wide;
    Py_ssize_t i = 0;
    PyThreadState *state = NULL;
    int j;

    for (j = 0; j < 8; j++) {
        key8[j] = key[(phase + j) & 3];
    }
    memcpy(&wide, key8, 8);
    if (n > RELEASE_GIL_ABOVE) {
        state = PyEval_SaveThread();
    }
    /* i advances in multiples of 8, so key8 stays aligned with the data. */
    for (; i + 8 <= n; i += 8) {
        uint64_t chunk;
        memcpy(&chunk, in + i, 8);
        chunk ^= wide;
        memcpy(out + i, &chunk, 8);
    }
    for (; i < n; i++) {
        out[i] = in[i] ^ key8[i & 7];
    }
    if (state != NULL) {
        PyEval_RestoreThread(state);
    }
}

static int
check_key(Py_buffer *key)
{
    if (key->len != 4) {
        PyErr_SetString(PyExc_ValueError, "the masking key must be 4 bytes");
        return -1;
    }
    return 0;
}

static PyObject *
apply_mask(PyObject *self, PyObject *args)
{
    Py_buffer data, key, prefix = {NULL, NULL};
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "y*y*|y*:apply_mask", &data, &key, &prefix)) {
        return NULL;
    }
    if (check_key(&key) < 0) {
        goto done;
    }
    if (data.len > PY_SSIZE_T_MAX - prefix.len) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, prefix.len + data.len);
    if (result == NULL) {
        goto done;
    }
    if (prefix.len) {
        memcpy(PyBytes_AS_STRING(result), prefix.buf, prefix.len);
    }
    xor_into((unsigned char *)PyBytes_AS_STRING(result) + prefix.len,
             (const unsigned char *)data.buf, data.len,
             (const unsigned char *)key.buf, 0);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&key);
    if (prefix.obj != NULL) {
        PyBuffer_Release(&prefix);
    }
    return result;
}

static PyObject *
unmask_parts(PyObject *self, PyObject *args)
{
    PyObject *parts, *seq = NULL, *result = NULL;
    Py_buffer key, view;
    Py_ssize_t count, i, total = 0, offset = 0;
    unsigned char *out;

    if (!PyArg_ParseTuple(args, "Oy*:unmask_parts", &parts, &key)) {
        return NULL;
    }
    if (check_key(&key) < 0) {
        goto done;
    }
    seq = PySequence_Fast(parts, "unmask_parts() needs a sequence of buffers");
    if (seq == NULL) {
        goto done;
    }
    count = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < count; i++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i), &view,
                               PyBUF_SIMPLE) < 0) {
            goto done;
        }
        total += view.len;
        PyBuffer_Release(&view);
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) {
        goto done;
    }
    out = (unsigned char *)PyBytes_AS_STRING(result);
    for (i = 0; i < count; i++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i), &view,
                               PyBUF_SIMPLE) < 0) {
            Py_CLEAR(result);
            goto done;
        }
        /* The sequence is ours (fast-sequence copy): sizes cannot change
         * between the passes unless a part is a mutable buffer resized
         * meanwhile, which the bound below guards against. */
        if (view.len > total - offset) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_RuntimeError, "a part changed size");
            Py_CLEAR(result);
            goto done;
        }
        xor_into(out + offset, (const unsigned char *)view.buf, view.len,
                 (const unsigned char *)key.buf, offset);
        offset += view.len;
        PyBuffer_Release(&view);
    }
    if (offset != total) {
        PyErr_SetString(PyExc_RuntimeError, "a part changed size");
        Py_CLEAR(result);
    }
done:
    Py_XDECREF(seq);
    PyBuffer_Release(&key);
    return result;
}

static PyMethodDef methods[] = {
    {"apply_mask", apply_mask, METH_VARARGS,
     "apply_mask(data, key, prefix=b'') -> bytes: prefix, then data XORed "
     "with the 4-byte key repeated."},
    {"unmask_parts", unmask_parts, METH_VARARGS,
     "unmask_parts(parts, key) -> bytes: the buffers in parts, joined and "
     "XORed with the 4-byte key repeated (as apply_mask(b''.join(parts), "
     "key))."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "greenws._speedups", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
