/*
 * Optional C speedups for greenws.
 *
 * RFC 6455 masking XORs every payload byte with a 4-byte key.  In pure
 * Python that is the most expensive step of receiving (server) or sending
 * (client) a large message; here it runs eight bytes at a time.  greenws
 * falls back to its pure-Python version when this module is not built.
 *
 * An optional prefix (a frame header) is copied in front of the result, so
 * that a masked frame is built in one allocation instead of two.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Large payloads are masked with the GIL released, so other threads run. */
#define RELEASE_GIL_ABOVE 65536

static PyObject *
apply_mask(PyObject *self, PyObject *args)
{
    Py_buffer data, key, prefix = {NULL, NULL};
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "y*y*|y*:apply_mask", &data, &key, &prefix)) {
        return NULL;
    }
    if (key.len != 4) {
        PyErr_SetString(PyExc_ValueError, "the masking key must be 4 bytes");
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
    {
        const unsigned char *in = (const unsigned char *)data.buf;
        const unsigned char *k = (const unsigned char *)key.buf;
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result) + prefix.len;
        Py_ssize_t n = data.len;
        Py_ssize_t i = 0;
        unsigned char key8[8];
        uint64_t wide;
        PyThreadState *state = NULL;

        memcpy(key8, k, 4);
        memcpy(key8 + 4, k, 4);
        memcpy(&wide, key8, 8);
        if (n > RELEASE_GIL_ABOVE) {
            state = PyEval_SaveThread();
        }
        /* i advances in multiples of 8, so the key stays aligned. */
        for (; i + 8 <= n; i += 8) {
            uint64_t chunk;
            memcpy(&chunk, in + i, 8);
            chunk ^= wide;
            memcpy(out + i, &chunk, 8);
        }
        for (; i < n; i++) {
            out[i] = in[i] ^ k[i & 3];
        }
        if (state != NULL) {
            PyEval_RestoreThread(state);
        }
    }
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&key);
    if (prefix.obj != NULL) {
        PyBuffer_Release(&prefix);
    }
    return result;
}

static PyMethodDef methods[] = {
    {"apply_mask", apply_mask, METH_VARARGS,
     "apply_mask(data, key, prefix=b'') -> bytes: prefix, then data XORed "
     "with the 4-byte key repeated."},
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
