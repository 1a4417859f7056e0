/* The native fast path of inspection (see proxy/inspect/native.py, which loads and installs it).

   `prescan(value, is_text)`: a pre-scan over a string's characters that answers "could
   `free_text.scan_string` find anything in this?". It is a necessary condition of every detector
   `scan_string` runs, taken as loosely as a single pass allows: False only when no detector can
   fire, True whenever in doubt (any non-ASCII string, any '@', ':' or '+', any secret prefix,
   any run of digits and separators that could be a number worth checking).

   Built by hatch_build.py (gcc, no other tool); the code works without it (pure Python).
   Every change here must keep tests/proxy/test_inspect_native.py green: native and fallback
   give the same findings on the corpus and on generated inputs. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Bump with any change of behaviour; native.py refuses a module of another version (a stale
   build left in the tree). */
#define NATIVE_VERSION 1

static inline int is_upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static inline int is_alpha(unsigned char c) { return is_upper(c) || (c >= 'a' && c <= 'z'); }

/* The detectors of `scan_string` and what each needs (free_text.py, credentials.py):
   - e-mail: '@';  secrets: `may_hold_secret`'s substrings ('://' needs ':');  JWT: "eyJ";
   - numeric tokens `[+0-9][0-9 ().-]{5,28}[0-9]` (ASCII): a token lies inside a run of
     `[0-9 ().-]` (its '+' makes us say True at once). A '+' number: '+'. A `00` number: >= 11
     digits. An IPv4: >= 3 dots and >= 4 digits. An SSN: >= 2 dashes and 9 digits. A card or
     ICCID: >= 12 digits. In text, a national number: >= 7 digits;
   - outside text, a whole-value IBAN: 15..42 characters, two letters then two digits;
   - in text, an IBAN `[A-Z][A-Z][0-9][0-9]`, an address gate '#', "/F", ", [A-Z]". */
static int ascii_may_match(const unsigned char *s, Py_ssize_t n, int is_text)
{
    Py_ssize_t digits = 0, dots = 0, dashes = 0; /* in the current run of [0-9 ().-] */
    const Py_ssize_t enough_digits = is_text ? 7 : 11;
    Py_ssize_t i;

    if (!is_text && n >= 15 && n <= 42 && is_alpha(s[0]) && is_alpha(s[1]) && is_digit(s[2])
        && is_digit(s[3]))
        return 1;
    for (i = 0; i < n; i++) {
        unsigned char c = s[i];
        Py_ssize_t left = n - i - 1; /* characters after c */
        if (is_digit(c)) {
            digits++;
            if (digits >= enough_digits || (dots >= 3 && digits >= 4)
                || (dashes >= 2 && digits >= 9))
                return 1;
            continue;
        }
        switch (c) {
        case ' ':
        case '(':
        case ')':
            continue;
        case '.':
            dots++;
            if (dots >= 3 && digits >= 4)
                return 1;
            continue;
        case '-':
            dashes++;
            if (dashes >= 2 && digits >= 9)
                return 1;
            if (left >= 4 && memcmp(s + i + 1, "----", 4) == 0)
                return 1; /* -----BEGIN */
            continue;
        default:
            break;
        }
        /* Not a character of a numeric token: the run ends. */
        digits = dots = dashes = 0;
        switch (c) {
        case '@':
        case ':':
        case '+':
            return 1;
        case '#':
            if (is_text)
                return 1;
            break;
        case '/':
            if (is_text && left >= 1 && s[i + 1] == 'F')
                return 1;
            break;
        case ',':
            if (is_text && left >= 2 && s[i + 1] == ' ' && is_upper(s[i + 2]))
                return 1;
            break;
        case 'e':
            if (left >= 2 && s[i + 1] == 'y' && s[i + 2] == 'J')
                return 1;
            break;
        case 'x':
            if (left >= 2 && s[i + 1] == 'o' && s[i + 2] == 'x')
                return 1;
            break;
        case 'g':
            if (left >= 1 && s[i + 1] == 'h')
                return 1;
            break;
        case '_':
            if (left >= 5 && memcmp(s + i + 1, "live_", 5) == 0)
                return 1;
            break;
        default:
            break;
        }
        if (c == 'A' && left >= 3
            && (memcmp(s + i + 1, "KIA", 3) == 0 || memcmp(s + i + 1, "SIA", 3) == 0
                || memcmp(s + i + 1, "Iza", 3) == 0))
            return 1;
        if (is_text && is_upper(c) && left >= 3 && is_upper(s[i + 1]) && is_digit(s[i + 2])
            && is_digit(s[i + 3]))
            return 1;
    }
    return 0;
}

/* 1: `scan_string` may find something in `value`; 0: it cannot; -1: error. */
static int value_may_match(PyObject *value, int is_text)
{
    if (!PyUnicode_Check(value))
        return 1;
    if (PyUnicode_READY(value) < 0)
        return -1;
    if (!PyUnicode_IS_ASCII(value))
        return 1; /* invisible characters, full-width digits, other scripts: scan fully */
    return ascii_may_match(PyUnicode_1BYTE_DATA(value), PyUnicode_GET_LENGTH(value), is_text);
}

static PyObject *prescan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int is_text, result;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "prescan(value, is_text)");
        return NULL;
    }
    is_text = PyObject_IsTrue(args[1]);
    if (is_text < 0)
        return NULL;
    result = value_may_match(args[0], is_text);
    if (result < 0)
        return NULL;
    return PyBool_FromLong(result);
}

static PyMethodDef native_methods[] = {
    {"prescan", (PyCFunction)(void (*)(void))prescan, METH_FASTCALL,
     "prescan(value, is_text) -> bool: False when scan_string cannot find anything in value."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_native", "The native fast path of inspection.", -1, native_methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *module = PyModule_Create(&native_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddIntConstant(module, "VERSION", NATIVE_VERSION) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
