/* The native fast path of inspection (see proxy/inspect/native.py, which loads and installs it).

   `walk_object`, `walk_fields` and `walk_array`: the hot loops of `walk.py` (`_walk_object`,
   `_walk_fields`, `_walk_array`), the same steps in the same order, calling back into the Python code for
   everything but the loop itself and the checks it inlines. `configure(names)` hands them the
   Python functions and constants they call (walk.py's own, so there is one rule set).

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
#include <structmember.h>

/* Bump with any change of behaviour; native.py refuses a module of another version (a stale
   build left in the tree). */
#define NATIVE_VERSION 14

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
/* What a character is to `ascii_may_match`: most characters of a value (lower-case letters,
   quotes, braces) only end a run of a numeric token, and are skipped in a tight loop; the few
   a detector may start with have a class of their own (one jump, one test). The secret prefixes
   "eyJ", "xox" and "gh" are recognised at their second character ('y', 'o', 'h', looking back
   and ahead), so that 'e', 'x' and 'g' are skipped like any letter. */
enum {
    C_OTHER = 0,
    C_DIGIT,
    C_GAP, /* ' ', '(', ')' */
    C_DOT,
    C_DASH,
    C_HIT, /* '@', ':', '+' */
    C_UPPER,
    C_Y,
    C_O,
    C_H,
    C_UNDERSCORE,
    C_HASH,
    C_SLASH,
    C_COMMA,
    C_NUL, /* ends the tight loop: the NUL after a str's last character (or one inside it) */
};
static unsigned char char_class[256];

static void init_char_class(void)
{
    const char *c;
    int i;
    for (i = '0'; i <= '9'; i++)
        char_class[i] = C_DIGIT;
    for (i = 'A'; i <= 'Z'; i++)
        char_class[i] = C_UPPER;
    for (c = " ()"; *c; c++)
        char_class[(unsigned char)*c] = C_GAP;
    for (c = "@:+"; *c; c++)
        char_class[(unsigned char)*c] = C_HIT;
    char_class['.'] = C_DOT;
    char_class['-'] = C_DASH;
    char_class['y'] = C_Y;
    char_class['o'] = C_O;
    char_class['h'] = C_H;
    char_class['_'] = C_UNDERSCORE;
    char_class['#'] = C_HASH;
    char_class['/'] = C_SLASH;
    char_class[','] = C_COMMA;
    char_class[0] = C_NUL;
}

/* `s` is a str's 1-byte data: `s[n]` is its terminating NUL (what PyUnicode_AsUTF8 relies on for
   an ASCII str), which stops the tight loop without a bound check. */
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
        int cls = char_class[c];
        switch (cls) {
        case C_DIGIT:
            digits++;
            if (digits >= enough_digits || (dots >= 3 && digits >= 4)
                || (dashes >= 2 && digits >= 9))
                return 1;
            continue;
        case C_GAP:
            continue;
        case C_DOT:
            dots++;
            if (dots >= 3 && digits >= 4)
                return 1;
            continue;
        case C_DASH:
            dashes++;
            if (dashes >= 2 && digits >= 9)
                return 1;
            if (left >= 4 && memcmp(s + i + 1, "----", 4) == 0)
                return 1; /* -----BEGIN */
            continue;
        case C_HIT:
            return 1;
        default:
            break;
        }
        /* Not a character of a numeric token: the run ends. */
        digits = dots = dashes = 0;
        switch (cls) {
        case C_Y:
            if (i >= 1 && s[i - 1] == 'e' && left >= 1 && s[i + 1] == 'J')
                return 1; /* "eyJ" */
            break;
        case C_O:
            if (i >= 1 && s[i - 1] == 'x' && left >= 1 && s[i + 1] == 'x')
                return 1; /* "xox" */
            break;
        case C_H:
            if (i >= 1 && s[i - 1] == 'g')
                return 1; /* "gh" */
            break;
        case C_UPPER:
            if (c == 'A' && left >= 3
                && (memcmp(s + i + 1, "KIA", 3) == 0 || memcmp(s + i + 1, "SIA", 3) == 0
                    || memcmp(s + i + 1, "Iza", 3) == 0))
                return 1;
            if (is_text && left >= 3 && is_upper(s[i + 1]) && is_digit(s[i + 2])
                && is_digit(s[i + 3]))
                return 1;
            break;
        case C_UNDERSCORE:
            if (left >= 5 && memcmp(s + i + 1, "live_", 5) == 0)
                return 1;
            break;
        case C_HASH:
            if (is_text)
                return 1;
            break;
        case C_SLASH:
            if (is_text && left >= 1 && s[i + 1] == 'F')
                return 1;
            break;
        case C_COMMA:
            if (is_text && left >= 2 && s[i + 1] == ' ' && is_upper(s[i + 2]))
                return 1;
            break;
        default: /* C_OTHER, C_NUL */
            break;
        }
        /* Skip what ends a run and starts nothing; the NUL at s[n] stops it at the end. */
        while (char_class[s[i + 1]] == C_OTHER)
            i++;
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


static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* `urllib.parse.unquote_to_bytes(text)` for an ASCII str (form.py's `_unquote` of a form or
   query field): each `%` followed by two hex digits is that byte, any other `%` stays. */
static PyObject *percent_decode(PyObject *self, PyObject *text)
{
    const unsigned char *s;
    char *out;
    Py_ssize_t n, i, j;
    PyObject *result;
    if (!PyUnicode_Check(text) || PyUnicode_READY(text) < 0 || !PyUnicode_IS_ASCII(text)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "percent_decode takes an ASCII str");
        return NULL;
    }
    s = PyUnicode_1BYTE_DATA(text);
    n = PyUnicode_GET_LENGTH(text);
    result = PyBytes_FromStringAndSize(NULL, n);
    if (result == NULL)
        return NULL;
    out = PyBytes_AS_STRING(result);
    for (i = 0, j = 0; i < n; j++) {
        int high, low;
        if (s[i] == '%' && i + 2 < n && (high = hex_value(s[i + 1])) >= 0
            && (low = hex_value(s[i + 2])) >= 0) {
            out[j] = (char)(high << 4 | low);
            i += 3;
        }
        else
            out[j] = (char)s[i++];
    }
    if (j < n && _PyBytes_Resize(&result, j) < 0)
        return NULL;
    return result;
}

/* `encoded.binary_head(value)` where the walker can answer it without Python: the first 64
   characters of an ASCII value all of one base64 alphabet (what `base64_bytes` decodes without
   its whitespace, padding and alphabet fixes). 1: binary (`_walk_base64` answers False), 0: text
   or gzip (`_walk_base64` decides), -1: another head (`_walk_base64` decides). */
static signed char b64_value[256];

static void init_b64_value(void)
{
    int i;
    memset(b64_value, -1, sizeof b64_value);
    for (i = 0; i < 26; i++) {
        b64_value['A' + i] = (signed char)i;
        b64_value['a' + i] = (signed char)(26 + i);
    }
    for (i = 0; i < 10; i++)
        b64_value['0' + i] = (signed char)(52 + i);
    b64_value['+'] = b64_value['-'] = 62;
    b64_value['/'] = b64_value['_'] = 63;
}

static int ascii_binary_head(const unsigned char *s, Py_ssize_t n)
{
    unsigned char head[48];
    int standard = 0, urlsafe = 0, i, j;
    if (n < 64)
        return -1;
    for (i = 0; i < 16; i++) {
        unsigned int quad = 0;
        for (j = 0; j < 4; j++) {
            unsigned char c = s[4 * i + j];
            int v = b64_value[c];
            if (v < 0)
                return -1;
            standard |= c == '+' || c == '/';
            urlsafe |= c == '-' || c == '_';
            quad = (quad << 6) | (unsigned int)v;
        }
        head[3 * i] = (unsigned char)(quad >> 16);
        head[3 * i + 1] = (unsigned char)(quad >> 8);
        head[3 * i + 2] = (unsigned char)quad;
    }
    if (standard && urlsafe)
        return 1; /* both alphabets: `base64_bytes` is None */
    if (head[0] == 0x1f && head[1] == 0x8b && head[2] == 0x08)
        return 0; /* GZIP_MAGIC */
    for (i = 0; i < 48; i++) {
        unsigned char b = head[i];
        if (b <= 0x08 || b == 0x0b || b == 0x0c || (b >= 0x0e && b <= 0x1f) || b == 0x7f)
            return 1; /* `_CONTROL_BYTES` */
    }
    return 0;
}

static int ascii_has_digit(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i;
    for (i = 0; i < n; i++)
        if (is_digit(s[i]))
            return 1;
    return 0;
}


/* ---------------------------------------------------------------------------------------------
   The walker. Names are those of walk.py; each step says which line of `_walk_fields` or
   `_walk_array` it is. */

static PyObject *py_identifier_like; /* keys.any_identifier_like */
static PyObject *py_keyed_by_ids;     /* walk._walk_object_keyed_by_identifiers */
static PyObject *py_object_plan;      /* walk._object_plan */
static PyObject *py_walk_embedded;    /* walk._walk_embedded */
static PyObject *py_walk_base64;      /* walk._walk_base64 */
static PyObject *py_inner_context;    /* walk._inner_context */
static PyObject *py_is_valid_compact; /* phone.is_valid_compact */
static PyObject *py_key_only;         /* fields.key_only */
static PyObject *py_judge_str;        /* fields.judge_str */
static PyObject *py_scan_scalar;      /* fields.scan_scalar */
static PyObject *py_split_numbers;    /* split.scan_split_numbers */
static PyObject *py_container_key;    /* fields.scan_container_key */
static PyObject *py_is_lat_lng_pair;  /* fields.is_lat_lng_pair */
static PyObject *py_object_plans;     /* walk._OBJECT_PLANS (a dict, cleared in place) */
static PyObject *py_key_only_rules;   /* fields.KEY_ONLY_RULES (frozenset) */
static PyObject *py_container_rules;  /* fields.CONTAINER_RULES (frozenset) */
static PyObject *py_list_container_rules; /* fields.LIST_CONTAINER_RULES (frozenset) */
static PyObject *py_phone_rule;       /* keys.Rule.PHONE */
static PyObject *py_phone_generic_rule; /* keys.Rule.PHONE_GENERIC */
static PyObject *py_coordinates_rule; /* keys.Rule.COORDINATES */
static PyObject *py_phone_category;   /* categories.PHONE */
static PyObject *py_location_precise; /* categories.LOCATION_PRECISE */
static PyObject *py_content_rule;     /* keys.Rule.CONTENT */
static PyObject *py_content_category; /* categories.CONTENT */
static PyObject *py_scan_id_value;    /* fields.scan_id_value */
static PyObject *py_channel_context;  /* walk.channel_context */
static PyObject *py_walk_pair;        /* walk.walk_pair */
static PyTypeObject *scan_type;       /* scan.Scan */
/* Offsets of its slots `fields`, `next_check`, `recording`, `_findings`. */
static Py_ssize_t scan_fields_offset, scan_next_check_offset, scan_recording_offset,
    scan_findings_offset;
static PyObject *py_phone_prefixes;   /* phone._BY_PREFIX (a dict, filled as numbers are seen) */
static PyTypeObject *finding_type;    /* model.Finding */
static Py_ssize_t finding_category_offset, finding_location_offset, finding_detector_offset;
static long long dial_code_flag;      /* keys.Ctx.DIAL_CODE */
static long long error_flag;          /* keys.Ctx.ERROR */
static long long channel_flag;        /* keys.Ctx.CHANNEL */
static long long sms_flag;            /* keys.Ctx.SMS */
static long long pair_flag;           /* keys.Ctx.PAIR */
/* What `_inner_context` combines: keys.STICKY, walk._TOP_OR_ROOT, Ctx.ROOT, Ctx.TOP,
   walk._NOT_PERSON_OR_EMPLOYER, Ctx.PERSON, and credentials.AUTH_OBJECTS (a frozenset). */
static long long sticky_flags, top_or_root_flags, root_flag, top_flag, not_person_flags,
    person_flag;
static PyObject *py_auth_objects;
static Py_ssize_t max_code_length;    /* split.MAX_CODE_LENGTH */
static Py_ssize_t min_base64;         /* encoded.MIN_BASE64 */
static Py_ssize_t long_base64;        /* encoded.LONG_BASE64 */
static Py_ssize_t memo_max_length;    /* fields.MEMO_MAX_LENGTH */
static Py_ssize_t opt_keyword_max;    /* keys.OPT_KEYWORD_MAX */
static int configured;
static int not_configured(void);
static PyObject *one; /* 1 */

static PyObject *s_add, *s_checkpoint, *s_too_deep, *s_fields, *s_next_check, *s_memo,
    *s_limits, *s_max_depth, *s_rule, *s_phone, *s_latlng, *s_key_content, *s_fullmatch,
    *s_is_negative, *s_squashed, *s_parent_flags;

static PyObject *walk_array_impl(PyObject *scan, PyObject *node, PyObject *location,
                                 PyObject *info, PyObject *ctx, Py_ssize_t depth, int in_list);
static PyObject *walk_object_impl(PyObject *scan, PyObject *node, PyObject *location,
                                  PyObject *info, PyObject *ctx, Py_ssize_t depth, int in_list);

static PyObject *call(PyObject *fn, PyObject *const *args, size_t nargs)
{
    return PyObject_Vectorcall(fn, args, nargs, NULL);
}

/* `fn(*args)` whose result only counts for its truth (a bool of walk.py): 1, 0 or -1. */
static int call_truth(PyObject *fn, PyObject *const *args, size_t nargs)
{
    PyObject *result = call(fn, args, nargs);
    int truth;
    if (result == NULL)
        return -1;
    truth = PyObject_IsTrue(result);
    Py_DECREF(result);
    return truth;
}

/* `fn(*args)` for its effect only: 0 or -1. */
static int call_void(PyObject *fn, PyObject *const *args, size_t nargs)
{
    PyObject *result = call(fn, args, nargs);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

static int scan_add(PyObject *scan, PyObject *category, PyObject *where, PyObject *detector)
{
    PyObject *args[4] = {scan, category, where, detector};
    if (Py_TYPE(scan) == scan_type) {
        /* `Scan.add`: append (category, detector) to `recording` when it is a list, then
           `_findings.setdefault((category, location), detector)`. */
        PyObject *recording = *(PyObject **)((char *)scan + scan_recording_offset);
        PyObject *found = *(PyObject **)((char *)scan + scan_findings_offset);
        if (recording != NULL && found != NULL && PyDict_CheckExact(found)
            && (recording == Py_None || PyList_CheckExact(recording))) {
            PyObject *key, *kept;
            if (recording != Py_None) {
                PyObject *pair = PyTuple_Pack(2, category, detector);
                int status;
                if (pair == NULL)
                    return -1;
                Py_INCREF(recording);
                status = PyList_Append(recording, pair);
                Py_DECREF(recording);
                Py_DECREF(pair);
                if (status < 0)
                    return -1;
            }
            key = PyTuple_Pack(2, category, where);
            if (key == NULL)
                return -1;
            Py_INCREF(found);
            kept = PyDict_SetDefault(found, key, detector); /* borrowed */
            Py_DECREF(found);
            Py_DECREF(key);
            return kept == NULL ? -1 : 0;
        }
    }
    PyObject *result = PyObject_VectorcallMethod(s_add, args, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                                 NULL);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

static int checkpoint(PyObject *scan)
{
    PyObject *args[1] = {scan};
    PyObject *result = PyObject_VectorcallMethod(s_checkpoint, args,
                                                 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

/* `counted = scan.fields = scan.fields + 1; if counted >= scan.next_check: scan.checkpoint()` */
static int count_field(PyObject *scan)
{
    PyObject *fields, *counted, *next_check;
    int reached;
    if (Py_TYPE(scan) == scan_type) {
        /* A `Scan`: its two slots read and written in place (what the attribute access does). */
        PyObject **fields_slot = (PyObject **)((char *)scan + scan_fields_offset);
        PyObject *next = *(PyObject **)((char *)scan + scan_next_check_offset);
        if (*fields_slot != NULL && next != NULL && PyLong_CheckExact(*fields_slot)
            && PyLong_CheckExact(next)) {
            int overflow_a, overflow_b;
            long long now = PyLong_AsLongLongAndOverflow(*fields_slot, &overflow_a);
            long long limit = PyLong_AsLongLongAndOverflow(next, &overflow_b);
            if (!overflow_a && !overflow_b && now < LLONG_MAX) {
                PyObject *updated = PyLong_FromLongLong(now + 1);
                if (updated == NULL)
                    return -1;
                Py_SETREF(*fields_slot, updated);
                return now + 1 >= limit ? checkpoint(scan) : 0;
            }
        }
    }
    fields = PyObject_GetAttr(scan, s_fields);
    if (fields == NULL)
        return -1;
    counted = PyNumber_Add(fields, one);
    Py_DECREF(fields);
    if (counted == NULL)
        return -1;
    if (PyObject_SetAttr(scan, s_fields, counted) < 0) {
        Py_DECREF(counted);
        return -1;
    }
    next_check = PyObject_GetAttr(scan, s_next_check);
    if (next_check == NULL) {
        Py_DECREF(counted);
        return -1;
    }
    reached = PyObject_RichCompareBool(counted, next_check, Py_GE);
    Py_DECREF(counted);
    Py_DECREF(next_check);
    if (reached < 0)
        return -1;
    return reached ? checkpoint(scan) : 0;
}

/* `f"{location}[{index}]"` */
static PyObject *item_location(PyObject *location, Py_ssize_t index)
{
    if (PyUnicode_KIND(location) == PyUnicode_1BYTE_KIND && index >= 0) {
        /* The index's digits written here: snprintf costs more than the rest of the string. */
        char digits[32];
        int count = 0, k;
        size_t rest = (size_t)index;
        do {
            digits[count++] = (char)('0' + rest % 10);
            rest /= 10;
        } while (rest);
        for (k = 0; k < count / 2; k++) {
            char swap = digits[k];
            digits[k] = digits[count - 1 - k];
            digits[count - 1 - k] = swap;
        }
        Py_ssize_t length = PyUnicode_GET_LENGTH(location);
        PyObject *out = PyUnicode_New(length + count + 2, PyUnicode_MAX_CHAR_VALUE(location));
        Py_UCS1 *data;
        if (out == NULL)
            return NULL;
        data = PyUnicode_1BYTE_DATA(out);
        memcpy(data, PyUnicode_1BYTE_DATA(location), length);
        data[length] = '[';
        memcpy(data + length + 1, digits, count);
        data[length + 1 + count] = ']';
        return out;
    }
    return PyUnicode_FromFormat("%U[%zd]", location, index);
}

static int ascii_has_letter(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i;
    for (i = 0; i < n; i++)
        if (is_alpha(s[i]))
            return 1;
    return 0;
}

/* `phone.is_valid_compact(value)`: `+` then 7-15 ASCII digits, a known country code
   (`_BY_PREFIX[digits[:3]]`, filled by `_prefix_entry` on a miss) and the pattern of the
   national number's length. 1, 0 or -1. Anything unexpected calls the Python function. */
static int is_valid_compact(PyObject *value)
{
    Py_ssize_t length = PyUnicode_GET_LENGTH(value), i, size;
    const Py_UCS1 *chars;
    PyObject *prefix, *entry, *check, *pattern, *national, *match, *key;
    if (!PyUnicode_IS_ASCII(value))
        goto python;
    chars = PyUnicode_1BYTE_DATA(value);
    if (length < 8 || length > 16 || chars[0] != '+')
        return 0; /* `is_valid_international` wants 7 to 15 digits */
    for (i = 1; i < length; i++)
        if (!is_digit(chars[i]))
            return 0;
    prefix = PyUnicode_Substring(value, 1, 4);
    if (prefix == NULL)
        return -1;
    entry = PyDict_GetItemWithError(py_phone_prefixes, prefix);
    Py_DECREF(prefix);
    if (entry == NULL) {
        if (PyErr_Occurred())
            return -1;
        goto python; /* not seen yet: the Python code computes and caches it */
    }
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2
        || !PyLong_CheckExact(PyTuple_GET_ITEM(entry, 0))
        || !PyDict_CheckExact(PyTuple_GET_ITEM(entry, 1)))
        goto python;
    size = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 0));
    if (size == -1 && PyErr_Occurred())
        return -1;
    if (size <= 0)
        return 0;
    if (size >= length - 1)
        goto python;
    check = Py_NewRef(PyTuple_GET_ITEM(entry, 1));
    key = PyLong_FromSsize_t(length - 1 - size);
    if (key == NULL) {
        Py_DECREF(check);
        return -1;
    }
    pattern = PyDict_GetItemWithError(check, key); /* borrowed */
    Py_DECREF(key);
    if (pattern == NULL) {
        Py_DECREF(check);
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_INCREF(pattern);
    national = PyUnicode_Substring(value, 1 + size, length);
    if (national == NULL) {
        Py_DECREF(pattern);
        Py_DECREF(check);
        return -1;
    }
    {
        PyObject *args[2] = {pattern, national};
        match = PyObject_VectorcallMethod(s_fullmatch, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                          NULL);
    }
    Py_DECREF(national);
    Py_DECREF(pattern);
    Py_DECREF(check);
    if (match == NULL)
        return -1;
    i = match != Py_None;
    Py_DECREF(match);
    return (int)i;
python:
    {
        PyObject *args[1] = {value};
        return call_truth(py_is_valid_compact, args, 1);
    }
}

static int str_contains_char(PyObject *value, Py_UCS4 ch)
{
    return PyUnicode_FindChar(value, ch, 0, PyUnicode_GET_LENGTH(value), 1) >= 0;
}

/* `location + suffix`, made once per field when first needed (`location` itself without a
   suffix: a list element's place). */
static PyObject *field_location(PyObject *location, PyObject *suffix, PyObject **where)
{
    if (*where == NULL)
        *where = suffix == NULL ? Py_NewRef(location) : PyUnicode_Concat(location, suffix);
    return *where;
}

/* A string under a key whose values are never read (an id, an amount): what `_walk_fields` and
   `_visit_scalar` do with it. One that starts with '+' or holds an '@' goes to
   `fields.scan_id_value` (a number or an address used as an id); any other is skipped. `where`
   is `location + suffix` (`suffix` NULL: `location` itself). 0, or -1 on error. */
static int negative_str(PyObject *scan, PyObject *value, PyObject *location, PyObject *suffix,
                        PyObject *info)
{
    PyObject *where = NULL;
    int status;
    if (PyUnicode_READY(value) < 0)
        return -1;
    if (PyUnicode_GET_LENGTH(value) == 0
        || (PyUnicode_READ_CHAR(value, 0) != '+' && !str_contains_char(value, '@')))
        return 0;
    if (field_location(location, suffix, &where) == NULL)
        return -1;
    {
        PyObject *args[4] = {scan, where, info, value};
        status = call_void(py_scan_id_value, args, 4);
    }
    Py_DECREF(where);
    return status;
}

/* `walk._inner_context(ctx, info, siblings)`: the context of an object's fields. Flags that do
   not fit a long long go to the Python function. */
static PyObject *inner_context(PyObject *ctx, PyObject *info, PyObject *siblings)
{
    int overflow = 0, top;
    long long flags, outer, parent;
    outer = PyLong_AsLongLongAndOverflow(ctx, &overflow);
    if (overflow || (outer == -1 && PyErr_Occurred()))
        goto python;
    flags = PyLong_AsLongLongAndOverflow(siblings, &overflow);
    if (overflow || (flags == -1 && PyErr_Occurred()))
        goto python;
    flags |= outer & sticky_flags;
    if (outer & top_or_root_flags) {
        /* The body's top level, or its `auth`/`credentials` object. */
        top = (outer & root_flag) != 0;
        if (!top && info != Py_None) {
            PyObject *squashed = PyObject_GetAttr(info, s_squashed);
            if (squashed == NULL)
                return NULL;
            top = PySet_Contains(py_auth_objects, squashed);
            Py_DECREF(squashed);
            if (top < 0)
                return NULL;
        }
        if (top)
            flags |= top_flag;
    }
    if (info != Py_None) {
        PyObject *value = PyObject_GetAttr(info, s_parent_flags);
        if (value == NULL)
            return NULL;
        parent = PyLong_AsLongLongAndOverflow(value, &overflow);
        Py_DECREF(value);
        if (overflow || (parent == -1 && PyErr_Occurred()))
            goto python;
        flags |= parent;
        if (parent & not_person_flags)
            flags &= ~person_flag; /* `product.name`, `company.name` are not a person's name */
    }
    return PyLong_FromLongLong(flags);
python:
    PyErr_Clear();
    {
        PyObject *args[3] = {ctx, info, siblings};
        return call(py_inner_context, args, 3);
    }
}

/* One string field of `_walk_fields` past the field count: 0, or -1 on error. `*split_hint` is
   set by a `+65`-like value. Also a string element of a list (`_visit_str` then `scan_scalar`,
   the same steps), `suffix` NULL and `location` its place. */
static int walk_str_field(PyObject *scan, PyObject *memo, PyObject *value, PyObject *location,
                          PyObject *suffix, PyObject *key_kind, PyObject *rule, PyObject *inner,
                          long long inner_flags, Py_ssize_t depth, int *split_hint)
{
    Py_ssize_t length;
    Py_UCS4 first, last;
    PyObject *where = NULL;
    int status = -1, done, kind;
    const void *data;

    if (PyUnicode_READY(value) < 0)
        return -1;
    length = PyUnicode_GET_LENGTH(value);
    kind = PyUnicode_KIND(value);
    data = PyUnicode_DATA(value);
    if (length == 0)
        return 0; /* nothing to judge, not even a key-only rule */
    first = PyUnicode_READ(kind, data, 0);
    last = PyUnicode_READ(kind, data, length - 1);
    if (first == '+' && length <= max_code_length)
        *split_hint = 1; /* `+65` alone: the rest of the number may be a sibling */
    if (rule == Py_None && length < 7 && !str_contains_char(value, '@'))
        return 0;
    if ((first == '{' || first == '[') && (last == '}' || last == ']')) {
        PyObject *depth_obj;
        if (field_location(location, suffix, &where) == NULL)
            goto out;
        depth_obj = PyLong_FromSsize_t(depth);
        if (depth_obj == NULL)
            goto out;
        {
            PyObject *args[6] = {scan, value, where, key_kind, inner, depth_obj};
            done = call_truth(py_walk_embedded, args, 6);
        }
        Py_DECREF(depth_obj);
        if (done < 0)
            goto out;
        if (done) {
            status = 0;
            goto out;
        }
    }
    if (length >= min_base64 && !str_contains_char(value, ' ') && !str_contains_char(value, '.')
        && !(length > long_base64 && PyUnicode_IS_ASCII(value)
             && ascii_binary_head(PyUnicode_1BYTE_DATA(value), length) == 1)) {
        /* (A long value whose head decodes to binary is what `_walk_base64` tells first, by
           `binary_head`: answered here, without the call.) */
        PyObject *depth_obj;
        if (field_location(location, suffix, &where) == NULL)
            goto out;
        depth_obj = PyLong_FromSsize_t(depth);
        if (depth_obj == NULL)
            goto out;
        {
            PyObject *args[6] = {scan, value, where, key_kind, inner, depth_obj};
            done = call_truth(py_walk_base64, args, 6);
        }
        Py_DECREF(depth_obj);
        if (done < 0)
            goto out;
        if (done) {
            status = 0;
            goto out;
        }
    }
    if (rule != Py_None) {
        int is_phone_rule = PyObject_RichCompareBool(rule, py_phone_rule, Py_EQ);
        if (is_phone_rule < 0)
            goto out;
        if (is_phone_rule && first == '+') {
            int valid = is_valid_compact(value);
            if (valid < 0)
                goto out;
            if (valid) {
                if (field_location(location, suffix, &where) == NULL)
                    goto out;
                status = scan_add(scan, py_phone_category, where, s_phone);
                goto out;
            }
        }
        if (is_phone_rule
            || rule == py_phone_generic_rule
            || PyObject_RichCompareBool(rule, py_phone_generic_rule, Py_EQ) > 0) {
            /* `fields._phone` (or, for a reference's `number`, nothing) on an ASCII value
               without a digit: no number, and no digest (`is_sha256`: 44 or 64 characters), so
               no finding; what is left is `_scan_generic`, which the pre-scan rules out. */
            const unsigned char *chars = PyUnicode_1BYTE_DATA(value);
            if (PyUnicode_IS_ASCII(value) && length <= 16 * 1024 && length != 44 && length != 64
                && !ascii_has_digit(chars, length)
                && ((length < 7 && !memchr(chars, '@', length))
                    || !ascii_may_match(chars, length, 0))) {
                status = 0;
                goto out;
            }
        }
        if (PyErr_Occurred())
            goto out;
        done = PySet_Contains(py_key_only_rules, rule);
        if (done < 0)
            goto out;
        if (done) {
            PyObject *args[4];
            if (field_location(location, suffix, &where) == NULL)
                goto out;
            args[0] = scan;
            args[1] = where;
            args[2] = rule;
            args[3] = inner;
            status = call_void(py_key_only, args, 4);
            goto out;
        }
        if (length <= 16 * 1024 && length > opt_keyword_max && PyUnicode_IS_ASCII(value)
            && (rule == py_content_rule
                || PyObject_RichCompareBool(rule, py_content_rule, Py_EQ) > 0)) {
            /* A message body: what `judge_str` → `fields._content` does, when the pre-scan rules
               out every detector of `scan_string(value, is_text=True)`: the content finding
               alone (an ASCII letter is what `_HAS_LETTER` finds in ASCII). A body as short as
               an SMS keyword (`STOP`) is left to `_content`, which reads it as one. */
            const unsigned char *chars = PyUnicode_1BYTE_DATA(value);
            if (!ascii_may_match(chars, length, 1)) {
                status = 0;
                if (!(inner_flags & error_flag) && ascii_has_letter(chars, length)) {
                    if (field_location(location, suffix, &where) == NULL)
                        status = -1;
                    else
                        status = scan_add(scan, py_content_category, where, s_key_content);
                }
                goto out;
            }
        }
        if (PyErr_Occurred())
            goto out;
    }
    else if (length <= 16 * 1024) {
        /* No rule: `judge_str` would only run `scan_string` (and the IPv6 test, which needs a
           ':', a character the pre-scan never rules out): skip it when the pre-scan says so. */
        int may = value_may_match(value, 0);
        if (may < 0)
            goto out;
        if (!may) {
            status = 0;
            goto out;
        }
    }
    if (field_location(location, suffix, &where) == NULL)
        goto out;
    if (length > memo_max_length) {
        PyObject *args[6] = {scan, where, rule, value, inner, Py_None};
        status = call_void(py_judge_str, args, 6);
        goto out;
    }
    {
        /* Batches repeat values: judged once per call, replayed at each new location. */
        PyObject *memo_key = PyTuple_Pack(3, rule, inner, value), *known;
        if (memo_key == NULL)
            goto out;
        known = PyDict_GetItemWithError(memo, memo_key); /* borrowed */
        if (known == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(memo_key);
                goto out;
            }
            {
                PyObject *args[6] = {scan, where, rule, value, inner, memo_key};
                status = call_void(py_judge_str, args, 6);
            }
            Py_DECREF(memo_key);
            goto out;
        }
        Py_INCREF(known);
        Py_DECREF(memo_key);
        status = 0;
        if (known != Py_None && PyTuple_Check(known)) {
            Py_ssize_t i, n = PyTuple_GET_SIZE(known);
            for (i = 0; i < n && status == 0; i++) {
                PyObject *pair = PyTuple_GET_ITEM(known, i);
                if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                    PyErr_SetString(PyExc_TypeError, "memo entries are (category, detector)");
                    status = -1;
                    break;
                }
                status = scan_add(scan, PyTuple_GET_ITEM(pair, 0), where, PyTuple_GET_ITEM(pair, 1));
            }
        }
        else if (known != Py_None) {
            int truth = PyObject_IsTrue(known);
            if (truth < 0)
                status = -1;
            else if (truth) {
                PyErr_SetString(PyExc_TypeError, "memo entries are tuples");
                status = -1;
            }
        }
        Py_DECREF(known);
    }
out:
    Py_XDECREF(where);
    return status;
}

/* `_walk_fields(scan, node, location, fields, inner, depth)` */
static PyObject *walk_fields_impl(PyObject *scan, PyObject *node, PyObject *location,
                                  PyObject *fields, PyObject *inner, Py_ssize_t depth)
{
    PyObject *memo = NULL, *key, *value, *result = NULL, *depth_obj = NULL, *owned_inner = NULL;
    Py_ssize_t pos = 0, index = 0, count;
    long long inner_flags;
    int split_hint;

    if (!PyDict_Check(node) || !PyTuple_Check(fields)) {
        PyErr_SetString(PyExc_TypeError, "walk_fields(scan, dict, str, tuple, int, int)");
        return NULL;
    }
    count = PyTuple_GET_SIZE(fields);
    if (PyDict_GET_SIZE(node) != count) {
        PyErr_SetString(PyExc_ValueError, "zip() arguments have different lengths");
        return NULL;
    }
    inner_flags = PyLong_AsLongLong(inner);
    if (inner_flags == -1 && PyErr_Occurred())
        return NULL;
    split_hint = (inner_flags & dial_code_flag) != 0;
    memo = PyObject_GetAttr(scan, s_memo);
    if (memo == NULL)
        return NULL;
    if (!PyDict_Check(memo)) {
        PyErr_SetString(PyExc_TypeError, "scan.memo is a dict");
        goto out;
    }
    if ((inner_flags & channel_flag) && !(inner_flags & sms_flag)) {
        /* `ChannelType: SMS` beside the fields: `walk.channel_context` says whether the object
           is a text message's. */
        PyObject *args[3] = {node, fields, inner};
        if ((owned_inner = call(py_channel_context, args, 3)) == NULL)
            goto out;
        inner = owned_inner;
        inner_flags = PyLong_AsLongLong(inner);
        if (inner_flags == -1 && PyErr_Occurred())
            goto out;
    }
    if (inner_flags & pair_flag) {
        /* A label and a `value` beside it: `walk.walk_pair` walks the object. */
        PyObject *args[6] = {scan, node, location, fields, inner, NULL};
        if ((depth_obj = PyLong_FromSsize_t(depth)) == NULL)
            goto out;
        args[5] = depth_obj;
        result = call(py_walk_pair, args, 6);
        goto out;
    }
    if (Py_EnterRecursiveCall(" while walking fields"))
        goto out;
    while (PyDict_Next(node, &pos, &key, &value)) {
        PyObject *plan = PyTuple_GET_ITEM(fields, index++);
        PyObject *suffix, *key_kind, *rule, *negative;
        PyTypeObject *kind = Py_TYPE(value);
        int is_negative;
        if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) != 4) {
            PyErr_SetString(PyExc_TypeError, "a field plan is (suffix, info, rule, negative)");
            goto leave;
        }
        suffix = PyTuple_GET_ITEM(plan, 0);
        key_kind = PyTuple_GET_ITEM(plan, 1);
        rule = PyTuple_GET_ITEM(plan, 2);
        negative = PyTuple_GET_ITEM(plan, 3);
        Py_INCREF(value); /* the callbacks below may run any Python code */
        if (kind == &PyDict_Type || kind == &PyList_Type) {
            PyObject *where = PyUnicode_Concat(location, suffix), *done;
            if (where == NULL) {
                Py_DECREF(value);
                goto leave;
            }
            if (kind == &PyDict_Type)
                done = walk_object_impl(scan, value, where, key_kind, inner, depth, 0);
            else
                done = walk_array_impl(scan, value, where, key_kind, inner, depth, 0);
            Py_DECREF(where);
            Py_DECREF(value);
            if (done == NULL)
                goto leave;
            Py_DECREF(done);
            continue;
        }
        if (count_field(scan) < 0) {
            Py_DECREF(value);
            goto leave;
        }
        is_negative = negative == Py_True ? 1 : (negative == Py_False ? 0 : PyObject_IsTrue(negative));
        if (is_negative < 0) {
            Py_DECREF(value);
            goto leave;
        }
        if (value == Py_None) {
            Py_DECREF(value);
            continue;
        }
        if (is_negative) {
            int status = kind == &PyUnicode_Type
                ? negative_str(scan, value, location, suffix, key_kind) : 0;
            Py_DECREF(value);
            if (status < 0)
                goto leave;
            continue;
        }
        if (kind == &PyUnicode_Type) {
            int status = walk_str_field(scan, memo, value, location, suffix, key_kind, rule, inner,
                                        inner_flags, depth, &split_hint);
            Py_DECREF(value);
            if (status < 0)
                goto leave;
            continue;
        }
        if (rule != Py_None) {
            PyObject *where = PyUnicode_Concat(location, suffix);
            int status;
            if (where == NULL) {
                Py_DECREF(value);
                goto leave;
            }
            {
                PyObject *args[5] = {scan, where, key_kind, value, inner};
                status = call_void(py_scan_scalar, args, 5);
            }
            Py_DECREF(where);
            if (status < 0) {
                Py_DECREF(value);
                goto leave;
            }
        }
        Py_DECREF(value);
    }
    if (split_hint) {
        PyObject *triples = PyList_New(0), *args[2];
        int status;
        if (triples == NULL)
            goto leave;
        pos = 0;
        index = 0;
        while (PyDict_Next(node, &pos, &key, &value)) {
            PyObject *plan = PyTuple_GET_ITEM(fields, index++);
            PyObject *where = PyUnicode_Concat(location, PyTuple_GET_ITEM(plan, 0)), *triple;
            if (where == NULL) {
                Py_DECREF(triples);
                goto leave;
            }
            triple = PyTuple_Pack(3, where, PyTuple_GET_ITEM(plan, 1), value);
            Py_DECREF(where);
            if (triple == NULL || PyList_Append(triples, triple) < 0) {
                Py_XDECREF(triple);
                Py_DECREF(triples);
                goto leave;
            }
            Py_DECREF(triple);
        }
        args[0] = scan;
        args[1] = triples;
        status = call_void(py_split_numbers, args, 2);
        Py_DECREF(triples);
        if (status < 0)
            goto leave;
    }
    result = Py_NewRef(Py_None);
leave:
    Py_LeaveRecursiveCall();
out:
    Py_XDECREF(depth_obj);
    Py_XDECREF(owned_inner);
    Py_DECREF(memo);
    return result;
}

/* `tuple(item) == same_keys`, without making the tuple. */
static int keys_equal(PyObject *item, PyObject *same_keys)
{
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    if (same_keys == NULL || PyDict_GET_SIZE(item) != PyTuple_GET_SIZE(same_keys))
        return 0;
    while (PyDict_Next(item, &pos, &key, &value)) {
        PyObject *other = PyTuple_GET_ITEM(same_keys, i++);
        if (key != other) {
            int equal = PyObject_RichCompareBool(key, other, Py_EQ);
            if (equal <= 0)
                return equal;
        }
    }
    return 1;
}

static long max_depth_of(PyObject *scan)
{
    PyObject *limits = PyObject_GetAttr(scan, s_limits), *max_depth;
    long value;
    if (limits == NULL)
        return -1;
    max_depth = PyObject_GetAttr(limits, s_max_depth);
    Py_DECREF(limits);
    if (max_depth == NULL)
        return -1;
    value = PyLong_AsLong(max_depth);
    Py_DECREF(max_depth);
    return value;
}

/* `_walk_array(scan, node, location, info, ctx, depth, in_list)` */
static PyObject *walk_array_impl(PyObject *scan, PyObject *node, PyObject *location,
                                 PyObject *info, PyObject *ctx, Py_ssize_t depth, int in_list)
{
    PyObject *same_keys = NULL, *fields = NULL, *inner = NULL, *result = NULL;
    PyObject *depth_obj = NULL, *item_rule = NULL, *memo = NULL;
    Py_ssize_t index;
    long max_depth;
    long long ctx_flags;
    int object_depth_ok, item_negative = 0;

    if (!PyList_Check(node)) {
        PyErr_SetString(PyExc_TypeError, "walk_array takes a list");
        return NULL;
    }
    if (PyList_GET_SIZE(node) == 0)
        return Py_NewRef(Py_None);
    max_depth = max_depth_of(scan);
    if (max_depth == -1 && PyErr_Occurred())
        return NULL;
    if (depth > max_depth) {
        PyObject *args[2], *deep;
        int truth;
        if ((depth_obj = PyLong_FromSsize_t(depth)) == NULL)
            return NULL;
        args[0] = scan;
        args[1] = depth_obj;
        deep = PyObject_VectorcallMethod(s_too_deep, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                         NULL);
        Py_CLEAR(depth_obj);
        if (deep == NULL)
            return NULL;
        truth = PyObject_IsTrue(deep);
        Py_DECREF(deep);
        if (truth < 0)
            return NULL;
        if (truth)
            return Py_NewRef(Py_None);
    }
    if (info != Py_None) {
        PyObject *rule = PyObject_GetAttr(info, s_rule);
        int contained, status = 0;
        if (rule == NULL)
            return NULL;
        contained = in_list ? 0 : PySet_Contains(py_list_container_rules, rule);
        if (contained < 0) {
            Py_DECREF(rule);
            return NULL;
        }
        if (contained) {
            PyObject *args[4] = {scan, location, info, ctx};
            status = call_void(py_container_key, args, 4);
        }
        else if (rule == py_coordinates_rule
                 || (rule != Py_None
                     && PyObject_RichCompareBool(rule, py_coordinates_rule, Py_EQ) > 0)) {
            if (PyList_GET_SIZE(node) == 2) {
                PyObject *a = Py_NewRef(PyList_GET_ITEM(node, 0));
                PyObject *b = Py_NewRef(PyList_GET_ITEM(node, 1));
                PyObject *args[2] = {a, b};
                int pair = call_truth(py_is_lat_lng_pair, args, 2);
                Py_DECREF(a);
                Py_DECREF(b);
                if (pair < 0)
                    status = -1;
                else if (pair)
                    status = scan_add(scan, py_location_precise, location, s_latlng);
            }
        }
        else if (PyErr_Occurred())
            status = -1;
        Py_DECREF(rule);
        if (status < 0)
            return NULL;
    }
    depth += 1;
    object_depth_ok = depth <= max_depth;
    /* What `_visit_scalar` reads of `info` for each scalar element, read once. */
    if (info != Py_None) {
        PyObject *negative = PyObject_GetAttr(info, s_is_negative);
        if (negative == NULL)
            return NULL;
        item_negative = PyObject_IsTrue(negative);
        Py_DECREF(negative);
        if (item_negative < 0)
            return NULL;
        if ((item_rule = PyObject_GetAttr(info, s_rule)) == NULL)
            return NULL;
    }
    else
        item_rule = Py_NewRef(Py_None);
    ctx_flags = PyLong_AsLongLong(ctx); /* a context is an int of Ctx flags */
    if (ctx_flags == -1 && PyErr_Occurred()) {
        Py_DECREF(item_rule);
        return NULL;
    }
    if (Py_EnterRecursiveCall(" while walking an array")) {
        Py_DECREF(item_rule);
        return NULL;
    }
    for (index = 0; index < PyList_GET_SIZE(node); index++) {
        PyObject *item = Py_NewRef(PyList_GET_ITEM(node, index));
        PyTypeObject *kind = Py_TYPE(item);
        PyObject *where = item_location(location, index), *done = NULL;
        if (where == NULL) {
            Py_DECREF(item);
            goto leave;
        }
        if (kind == &PyDict_Type && object_depth_ok && PyDict_GET_SIZE(item) > 0) {
            int same = keys_equal(item, same_keys);
            if (same < 0)
                goto item_error;
            if (!same) {
                PyObject *keys = PySequence_Tuple(item), *plan;
                if (keys == NULL)
                    goto item_error;
                plan = PyDict_GetItemWithError(py_object_plans, keys); /* borrowed */
                if (plan == NULL) {
                    Py_DECREF(keys);
                    if (PyErr_Occurred())
                        goto item_error;
                }
                else {
                    if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) != 2) {
                        Py_DECREF(keys);
                        PyErr_SetString(PyExc_TypeError, "an object plan is (siblings, fields)");
                        goto item_error;
                    }
                    /* Held while used: another thread's inspection may clear the plans. */
                    Py_INCREF(plan);
                    Py_XSETREF(same_keys, keys);
                    Py_XSETREF(fields, Py_NewRef(PyTuple_GET_ITEM(plan, 1)));
                    Py_XSETREF(inner, inner_context(ctx, info, PyTuple_GET_ITEM(plan, 0)));
                    Py_DECREF(plan);
                    if (inner == NULL)
                        goto item_error;
                    same = 1;
                }
            }
            if (same) {
                done = walk_fields_impl(scan, item, where, fields, inner, depth + 1);
                goto item_done;
            }
        }
        if (kind == &PyDict_Type)
            done = walk_object_impl(scan, item, where, info, ctx, depth, 1);
        else if (kind == &PyList_Type)
            done = walk_array_impl(scan, item, where, info, ctx, depth, 1);
        else {
            /* `_visit_scalar`: count the field; under a negative key, only a string that may be
               an id's number or address (`negative_str`); a string as
               `_visit_str` + `scan_scalar` judge it (the steps of a field's string in
               `_walk_fields`, which walk_str_field takes); another scalar by its key's rule. */
            int status = count_field(scan), unused_hint = 0;
            if (status == 0 && item_negative && kind == &PyUnicode_Type)
                status = negative_str(scan, item, where, NULL, info);
            else if (status == 0 && item != Py_None && !item_negative) {
                if (kind == &PyUnicode_Type) {
                    if (memo == NULL && (memo = PyObject_GetAttr(scan, s_memo)) == NULL)
                        status = -1;
                    else if (!PyDict_Check(memo)) {
                        PyErr_SetString(PyExc_TypeError, "scan.memo is a dict");
                        status = -1;
                    }
                    else
                        status = walk_str_field(scan, memo, item, where, NULL, info, item_rule,
                                                ctx, ctx_flags, depth, &unused_hint);
                }
                else if (item_rule != Py_None) {
                    PyObject *args[5] = {scan, where, info, item, ctx};
                    status = call_void(py_scan_scalar, args, 5);
                }
            }
            done = status < 0 ? NULL : Py_NewRef(Py_None);
        }
    item_done:
        Py_DECREF(where);
        Py_DECREF(item);
        if (done == NULL)
            goto leave;
        Py_DECREF(done);
        continue;
    item_error:
        Py_DECREF(where);
        Py_DECREF(item);
        goto leave;
    }
    result = Py_NewRef(Py_None);
leave:
    Py_LeaveRecursiveCall();
    Py_XDECREF(same_keys);
    Py_XDECREF(fields);
    Py_XDECREF(inner);
    Py_XDECREF(item_rule);
    Py_XDECREF(memo);
    return result;
}

/* `scan.too_deep(depth)` when `depth` is past the limit: 1 (stop), 0 or -1. */
static int past_depth(PyObject *scan, Py_ssize_t depth, long max_depth)
{
    PyObject *args[2], *deep, *depth_obj;
    int truth;
    if (depth <= max_depth)
        return 0;
    if ((depth_obj = PyLong_FromSsize_t(depth)) == NULL)
        return -1;
    args[0] = scan;
    args[1] = depth_obj;
    deep = PyObject_VectorcallMethod(s_too_deep, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(depth_obj);
    if (deep == NULL)
        return -1;
    truth = PyObject_IsTrue(deep);
    Py_DECREF(deep);
    return truth;
}

/* `_walk_object(scan, node, location, info, ctx, depth, in_list)` */
static PyObject *walk_object_impl(PyObject *scan, PyObject *node, PyObject *location,
                                  PyObject *info, PyObject *ctx, Py_ssize_t depth, int in_list)
{
    PyObject *keys, *plan, *fields, *inner, *result, *args[6], *depth_obj;
    long max_depth;
    int stop, flag;

    if (!PyDict_Check(node)) {
        PyErr_SetString(PyExc_TypeError, "walk_object takes a dict");
        return NULL;
    }
    max_depth = max_depth_of(scan);
    if (max_depth == -1 && PyErr_Occurred())
        return NULL;
    stop = past_depth(scan, depth, max_depth);
    if (stop < 0)
        return NULL;
    if (stop)
        return Py_NewRef(Py_None);
    if (PyDict_GET_SIZE(node) > 0 && !in_list && info != Py_None) {
        PyObject *rule = PyObject_GetAttr(info, s_rule);
        if (rule == NULL)
            return NULL;
        flag = PySet_Contains(py_container_rules, rule);
        Py_DECREF(rule);
        if (flag < 0)
            return NULL;
        if (flag) {
            args[0] = scan;
            args[1] = location;
            args[2] = info;
            args[3] = ctx;
            if (call_void(py_container_key, args, 4) < 0)
                return NULL;
        }
    }
    keys = PySequence_Tuple(node);
    if (keys == NULL)
        return NULL;
    plan = PyDict_GetItemWithError(py_object_plans, keys); /* borrowed */
    if (plan == NULL) {
        if (PyErr_Occurred()) {
            Py_DECREF(keys);
            return NULL;
        }
        args[0] = keys;
        flag = call_truth(py_identifier_like, args, 1);
        if (flag < 0) {
            Py_DECREF(keys);
            return NULL;
        }
        if (flag) {
            Py_DECREF(keys);
            if ((depth_obj = PyLong_FromSsize_t(depth)) == NULL)
                return NULL;
            args[0] = scan;
            args[1] = node;
            args[2] = location;
            args[3] = info;
            args[4] = ctx;
            args[5] = depth_obj;
            result = call(py_keyed_by_ids, args, 6);
            Py_DECREF(depth_obj);
            return result;
        }
        args[0] = keys;
        plan = call(py_object_plan, args, 1); /* new reference */
    }
    else
        Py_INCREF(plan);
    Py_DECREF(keys);
    if (plan == NULL)
        return NULL;
    if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) != 2) {
        Py_DECREF(plan);
        PyErr_SetString(PyExc_TypeError, "an object plan is (siblings, fields)");
        return NULL;
    }
    fields = PyTuple_GET_ITEM(plan, 1);
    inner = inner_context(ctx, info, PyTuple_GET_ITEM(plan, 0));
    if (inner == NULL) {
        Py_DECREF(plan);
        return NULL;
    }
    if (!PyLong_Check(inner) || !PyTuple_Check(fields)) {
        Py_DECREF(inner);
        Py_DECREF(plan);
        PyErr_SetString(PyExc_TypeError, "a context is an int, a plan's fields a tuple");
        return NULL;
    }
    if (Py_EnterRecursiveCall(" while walking an object")) {
        Py_DECREF(inner);
        Py_DECREF(plan);
        return NULL;
    }
    result = walk_fields_impl(scan, node, location, fields, inner, depth + 1);
    Py_LeaveRecursiveCall();
    Py_DECREF(inner);
    Py_DECREF(plan);
    return result;
}

/* `scan._findings(found)`: (a `Finding` per ((category, location), detector) of `found`, in its
   order, made as that function makes them (allocated, then its three slots set); the frozenset
   of their categories). */
static PyObject *findings(PyObject *self, PyObject *found)
{
    PyObject *out, *categories, *key, *detector, *result;
    Py_ssize_t pos = 0, index = 0;
    if (not_configured())
        return NULL;
    if (!PyDict_CheckExact(found)) {
        PyErr_SetString(PyExc_TypeError, "findings(dict)");
        return NULL;
    }
    out = PyTuple_New(PyDict_GET_SIZE(found));
    if (out == NULL)
        return NULL;
    categories = PyFrozenSet_New(NULL);
    if (categories == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    while (PyDict_Next(found, &pos, &key, &detector)) {
        PyObject *finding;
        if (!PyTuple_CheckExact(key) || PyTuple_GET_SIZE(key) != 2
            || index >= PyTuple_GET_SIZE(out)) {
            PyErr_SetString(PyExc_TypeError, "findings are {(category, location): detector}");
            goto fail;
        }
        /* (filling a frozenset nobody else holds yet, as PySet_Add allows) */
        if (PySet_Add(categories, PyTuple_GET_ITEM(key, 0)) < 0)
            goto fail;
        finding = finding_type->tp_alloc(finding_type, 0);
        if (finding == NULL)
            goto fail;
        *(PyObject **)((char *)finding + finding_category_offset) =
            Py_NewRef(PyTuple_GET_ITEM(key, 0));
        *(PyObject **)((char *)finding + finding_location_offset) =
            Py_NewRef(PyTuple_GET_ITEM(key, 1));
        *(PyObject **)((char *)finding + finding_detector_offset) = Py_NewRef(detector);
        PyTuple_SET_ITEM(out, index++, finding);
    }
    if (index != PyTuple_GET_SIZE(out)) {
        PyErr_SetString(PyExc_RuntimeError, "findings changed while read");
        goto fail;
    }
    result = PyTuple_Pack(2, out, categories);
    Py_DECREF(out);
    Py_DECREF(categories);
    return result;
fail:
    Py_DECREF(out);
    Py_DECREF(categories);
    return NULL;
}

static PyObject *walk_object(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t depth;
    int in_list;
    if (not_configured())
        return NULL;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "walk_object(scan, node, location, info, ctx, depth, in_list)");
        return NULL;
    }
    if (!PyUnicode_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "walk_object: location is a str");
        return NULL;
    }
    depth = PyLong_AsSsize_t(args[5]);
    if (depth == -1 && PyErr_Occurred())
        return NULL;
    in_list = PyObject_IsTrue(args[6]);
    if (in_list < 0)
        return NULL;
    return walk_object_impl(args[0], args[1], args[2], args[3], args[4], depth, in_list);
}

/* `_visit_scalar(scan, node, location, info, ctx, depth)`: a scalar walked on its own (a form or
   query value, a header's value, a JSON document that is one string), the steps `walk_array`
   takes for a scalar element: count the field; nothing for None; under a negative key only
   `negative_str`; a
   string as walk_str_field judges it; another scalar by its key's rule (`scan_scalar`). */
static PyObject *visit_scalar(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *scan, *node, *location, *info, *ctx, *rule, *memo;
    Py_ssize_t depth;
    int status, unused_hint = 0;

    if (not_configured())
        return NULL;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "visit_scalar(scan, node, location, info, ctx, depth)");
        return NULL;
    }
    scan = args[0];
    node = args[1];
    location = args[2];
    info = args[3];
    ctx = args[4];
    if (!PyUnicode_Check(location) || !PyLong_Check(ctx)) {
        PyErr_SetString(PyExc_TypeError, "visit_scalar: location is a str, ctx an int");
        return NULL;
    }
    depth = PyLong_AsSsize_t(args[5]);
    if (depth == -1 && PyErr_Occurred())
        return NULL;
    if (count_field(scan) < 0)
        return NULL;
    if (node == Py_None)
        Py_RETURN_NONE;
    if (info != Py_None) {
        PyObject *negative = PyObject_GetAttr(info, s_is_negative);
        int is_negative;
        if (negative == NULL)
            return NULL;
        is_negative = PyObject_IsTrue(negative);
        Py_DECREF(negative);
        if (is_negative < 0)
            return NULL;
        if (is_negative) {
            if (Py_IS_TYPE(node, &PyUnicode_Type)
                && negative_str(scan, node, location, NULL, info) < 0)
                return NULL;
            Py_RETURN_NONE;
        }
        if ((rule = PyObject_GetAttr(info, s_rule)) == NULL)
            return NULL;
    }
    else
        rule = Py_NewRef(Py_None);
    if (Py_IS_TYPE(node, &PyUnicode_Type)) {
        long long ctx_flags = PyLong_AsLongLong(ctx);
        status = -1;
        if (ctx_flags == -1 && PyErr_Occurred())
            memo = NULL;
        else if ((memo = PyObject_GetAttr(scan, s_memo)) != NULL) {
            if (!PyDict_Check(memo))
                PyErr_SetString(PyExc_TypeError, "scan.memo is a dict");
            else
                status = walk_str_field(scan, memo, node, location, NULL, info, rule, ctx,
                                        ctx_flags, depth, &unused_hint);
        }
        Py_XDECREF(memo);
    }
    else if (rule != Py_None) {
        PyObject *call_args[5] = {scan, location, info, node, ctx};
        status = call_void(py_scan_scalar, call_args, 5);
    }
    else
        status = 0;
    Py_DECREF(rule);
    if (status < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int not_configured(void)
{
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "proxy.inspect._native: configure() first");
        return 1;
    }
    return 0;
}

static PyObject *walk_fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t depth;
    if (not_configured())
        return NULL;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "walk_fields(scan, node, location, fields, inner, depth)");
        return NULL;
    }
    if (!PyUnicode_Check(args[2]) || !PyLong_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "walk_fields: location is a str, inner an int");
        return NULL;
    }
    depth = PyLong_AsSsize_t(args[5]);
    if (depth == -1 && PyErr_Occurred())
        return NULL;
    return walk_fields_impl(args[0], args[1], args[2], args[3], args[4], depth);
}

static PyObject *walk_array(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t depth;
    int in_list;
    if (not_configured())
        return NULL;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "walk_array(scan, node, location, info, ctx, depth, in_list)");
        return NULL;
    }
    if (!PyUnicode_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "walk_array: location is a str");
        return NULL;
    }
    depth = PyLong_AsSsize_t(args[5]);
    if (depth == -1 && PyErr_Occurred())
        return NULL;
    in_list = PyObject_IsTrue(args[6]);
    if (in_list < 0)
        return NULL;
    return walk_array_impl(args[0], args[1], args[2], args[3], args[4], depth, in_list);
}

static int take(PyObject *names, const char *name, PyObject **slot)
{
    PyObject *value = PyDict_GetItemString(names, name); /* borrowed */
    if (value == NULL) {
        PyErr_Format(PyExc_KeyError, "configure: %s is missing", name);
        return -1;
    }
    Py_XSETREF(*slot, Py_NewRef(value));
    return 0;
}

static int take_int(PyObject *names, const char *name, long long *out)
{
    PyObject *value = PyDict_GetItemString(names, name);
    if (value == NULL) {
        PyErr_Format(PyExc_KeyError, "configure: %s is missing", name);
        return -1;
    }
    *out = PyLong_AsLongLong(value);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* The offset of a `__slots__` member of `type` holding an object. */
static int slot_offset(PyObject *type, const char *name, Py_ssize_t *offset)
{
    PyObject *descr = PyDict_GetItemString(((PyTypeObject *)type)->tp_dict, name);
    PyMemberDef *member;
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "configure: %s is not a slot", name);
        return -1;
    }
    member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
        PyErr_Format(PyExc_TypeError, "configure: %s is not a writable object slot", name);
        return -1;
    }
    *offset = member->offset;
    return 0;
}

static PyObject *configure(PyObject *self, PyObject *names)
{
    long long number;
    if (!PyDict_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "configure(dict)");
        return NULL;
    }
    configured = 0;
    if (take(names, "any_identifier_like", &py_identifier_like) < 0
        || take(names, "_walk_object_keyed_by_identifiers", &py_keyed_by_ids) < 0
        || take(names, "_object_plan", &py_object_plan) < 0
        || take(names, "_walk_embedded", &py_walk_embedded) < 0
        || take(names, "_walk_base64", &py_walk_base64) < 0
        || take(names, "_inner_context", &py_inner_context) < 0
        || take(names, "is_valid_compact", &py_is_valid_compact) < 0
        || take(names, "key_only", &py_key_only) < 0
        || take(names, "judge_str", &py_judge_str) < 0
        || take(names, "scan_scalar", &py_scan_scalar) < 0
        || take(names, "scan_split_numbers", &py_split_numbers) < 0
        || take(names, "scan_container_key", &py_container_key) < 0
        || take(names, "is_lat_lng_pair", &py_is_lat_lng_pair) < 0
        || take(names, "_OBJECT_PLANS", &py_object_plans) < 0
        || take(names, "KEY_ONLY_RULES", &py_key_only_rules) < 0
        || take(names, "CONTAINER_RULES", &py_container_rules) < 0
        || take(names, "LIST_CONTAINER_RULES", &py_list_container_rules) < 0
        || take(names, "PHONE_RULE", &py_phone_rule) < 0
        || take(names, "PHONE_GENERIC_RULE", &py_phone_generic_rule) < 0
        || take(names, "COORDINATES_RULE", &py_coordinates_rule) < 0
        || take(names, "PHONE_CATEGORY", &py_phone_category) < 0
        || take(names, "LOCATION_PRECISE", &py_location_precise) < 0
        || take(names, "CONTENT_RULE", &py_content_rule) < 0
        || take(names, "CONTENT_CATEGORY", &py_content_category) < 0
        || take(names, "scan_id_value", &py_scan_id_value) < 0
        || take(names, "channel_context", &py_channel_context) < 0
        || take(names, "walk_pair", &py_walk_pair) < 0
        || take(names, "PHONE_PREFIXES", &py_phone_prefixes) < 0)
        return NULL;
    if (!PyDict_CheckExact(py_phone_prefixes)) {
        PyErr_SetString(PyExc_TypeError, "configure: PHONE_PREFIXES is a dict");
        return NULL;
    }
    {
        PyObject *type = NULL;
        if (take(names, "Scan", &type) < 0)
            return NULL;
        if (!PyType_Check(type) || slot_offset(type, "fields", &scan_fields_offset) < 0
            || slot_offset(type, "next_check", &scan_next_check_offset) < 0
            || slot_offset(type, "recording", &scan_recording_offset) < 0
            || slot_offset(type, "_findings", &scan_findings_offset) < 0) {
            Py_DECREF(type);
            return NULL;
        }
        Py_XSETREF(scan_type, (PyTypeObject *)type);
    }
    {
        PyObject *type = NULL;
        if (take(names, "Finding", &type) < 0)
            return NULL;
        if (!PyType_Check(type) || ((PyTypeObject *)type)->tp_alloc == NULL
            || slot_offset(type, "category", &finding_category_offset) < 0
            || slot_offset(type, "location", &finding_location_offset) < 0
            || slot_offset(type, "detector", &finding_detector_offset) < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "configure: Finding is a slotted class");
            Py_DECREF(type);
            return NULL;
        }
        Py_XSETREF(finding_type, (PyTypeObject *)type);
    }
    if (!PyDict_Check(py_object_plans) || !PyFrozenSet_Check(py_key_only_rules)
        || !PyFrozenSet_Check(py_container_rules) || !PyFrozenSet_Check(py_list_container_rules)) {
        PyErr_SetString(PyExc_TypeError, "configure: plans a dict, rule sets frozensets");
        return NULL;
    }
    if (take_int(names, "DIAL_CODE", &dial_code_flag) < 0
        || take_int(names, "ERROR", &error_flag) < 0
        || take_int(names, "CHANNEL", &channel_flag) < 0
        || take_int(names, "SMS", &sms_flag) < 0
        || take_int(names, "PAIR", &pair_flag) < 0
        || take_int(names, "STICKY", &sticky_flags) < 0
        || take_int(names, "TOP_OR_ROOT", &top_or_root_flags) < 0
        || take_int(names, "ROOT", &root_flag) < 0 || take_int(names, "TOP", &top_flag) < 0
        || take_int(names, "NOT_PERSON_OR_EMPLOYER", &not_person_flags) < 0
        || take_int(names, "PERSON", &person_flag) < 0)
        return NULL;
    if (take(names, "AUTH_OBJECTS", &py_auth_objects) < 0)
        return NULL;
    if (!PyFrozenSet_Check(py_auth_objects)) {
        PyErr_SetString(PyExc_TypeError, "configure: AUTH_OBJECTS is a frozenset");
        return NULL;
    }
    if (take_int(names, "MAX_CODE_LENGTH", &number) < 0)
        return NULL;
    max_code_length = (Py_ssize_t)number;
    if (take_int(names, "MIN_BASE64", &number) < 0)
        return NULL;
    min_base64 = (Py_ssize_t)number;
    if (take_int(names, "LONG_BASE64", &number) < 0)
        return NULL;
    long_base64 = (Py_ssize_t)number;
    if (take_int(names, "MEMO_MAX_LENGTH", &number) < 0)
        return NULL;
    memo_max_length = (Py_ssize_t)number;
    if (take_int(names, "OPT_KEYWORD_MAX", &number) < 0)
        return NULL;
    opt_keyword_max = (Py_ssize_t)number;
    configured = 1;
    Py_RETURN_NONE;
}

static PyMethodDef native_methods[] = {
    {"walk_fields", (PyCFunction)(void (*)(void))walk_fields, METH_FASTCALL,
     "walk.py's _walk_fields, compiled."},
    {"walk_array", (PyCFunction)(void (*)(void))walk_array, METH_FASTCALL,
     "walk.py's _walk_array, compiled."},
    {"walk_object", (PyCFunction)(void (*)(void))walk_object, METH_FASTCALL,
     "walk.py's _walk_object, compiled."},
    {"visit_scalar", (PyCFunction)(void (*)(void))visit_scalar, METH_FASTCALL,
     "walk.py's _visit_scalar, compiled."},
    {"findings", (PyCFunction)findings, METH_O, "scan.py's _findings, compiled."},
    {"percent_decode", (PyCFunction)percent_decode, METH_O,
     "percent_decode(ascii_text) -> bytes: urllib.parse.unquote_to_bytes, compiled."},
    {"configure", (PyCFunction)configure, METH_O,
     "configure(names): the Python functions and constants the walker calls."},
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
    init_char_class();
    init_b64_value();
#define INTERN(var, text)                                                                           \
    if ((var = PyUnicode_InternFromString(text)) == NULL) {                                        \
        Py_DECREF(module);                                                                         \
        return NULL;                                                                               \
    }
    INTERN(s_add, "add");
    INTERN(s_checkpoint, "checkpoint");
    INTERN(s_too_deep, "too_deep");
    INTERN(s_fields, "fields");
    INTERN(s_next_check, "next_check");
    INTERN(s_memo, "memo");
    INTERN(s_limits, "limits");
    INTERN(s_max_depth, "max_depth");
    INTERN(s_rule, "rule");
    INTERN(s_phone, "phone");
    INTERN(s_latlng, "latlng");
    INTERN(s_key_content, "key:content");
    INTERN(s_fullmatch, "fullmatch");
    INTERN(s_is_negative, "is_negative");
    INTERN(s_squashed, "squashed");
    INTERN(s_parent_flags, "parent_flags");
#undef INTERN
    if ((one = PyLong_FromLong(1)) == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "VERSION", NATIVE_VERSION) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
