#include "sc_curl.h"
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdio.h>
#include <stdatomic.h>

typedef struct {
    unsigned char *data;
    size_t length;
    size_t capacity;
    int overflow;
} buffer;

/// Replies above this size are refused: a peer never needs to send more in one answer.
static const size_t max_reply = 256u * 1024u * 1024u;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata) {
    buffer *b = (buffer *)userdata;
    size_t n = size * nmemb;
    if (b->length + n > max_reply) { b->overflow = 1; return 0; }
    if (b->length + n > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 4096;
        while (capacity < b->length + n) capacity *= 2;
        unsigned char *grown = realloc(b->data, capacity);
        if (!grown) { b->overflow = 1; return 0; }
        b->data = grown;
        b->capacity = capacity;
    }
    memcpy(b->data + b->length, ptr, n);
    b->length += n;
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata) {
    sc_http_result *result = (sc_http_result *)userdata;
    size_t n = size * nmemb;
    static const char name[] = "x-secureconf-signature:";
    size_t name_length = sizeof name - 1;
    if (n > name_length && strncasecmp(ptr, name, name_length) == 0) {
        const char *value = ptr + name_length;
        size_t length = n - name_length;
        while (length > 0 && (*value == ' ' || *value == '\t')) { value++; length--; }
        while (length > 0 && (value[length - 1] == '\r' || value[length - 1] == '\n' || value[length - 1] == ' ')) length--;
        if (length < sizeof result->signature) {
            memcpy(result->signature, value, length);
            result->signature[length] = 0;
        }
    }
    return n;
}

void sc_http_global_init(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static __thread CURL *thread_handle = NULL;

/// What every exchange has: no signals, no redirects, http(s) only, peers always verified
/// (against `ca_file` when given).
static void set_transport_options(CURL *curl, const char *ca_file) {
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
    if (ca_file && ca_file[0]) curl_easy_setopt(curl, CURLOPT_CAINFO, ca_file);
}

struct sc_http_abort {
    atomic_int set;
};

sc_http_abort *sc_http_abort_new(void) {
    sc_http_abort *flag = calloc(1, sizeof *flag);
    if (flag) atomic_init(&flag->set, 0);
    return flag;
}

void sc_http_abort_trigger(sc_http_abort *flag) {
    if (flag) atomic_store(&flag->set, 1);
}

void sc_http_abort_free(sc_http_abort *flag) { free(flag); }

static int aborted(const sc_http_abort *flag) {
    return flag && atomic_load(&((sc_http_abort *)flag)->set);
}

static int on_request_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    (void)dltotal; (void)dlnow; (void)ultotal; (void)ulnow;
    return aborted((const sc_http_abort *)userdata) ? 1 : 0;
}

int sc_http_request(const char *method, const char *url,
                    const char *const *headers, size_t header_count,
                    const unsigned char *body, size_t body_length,
                    long timeout_ms, const char *ca_file,
                    const sc_http_abort *abort_flag,
                    sc_http_result *result) {
    memset(result, 0, sizeof *result);
    if (aborted(abort_flag)) {
        strncpy(result->error, "aborted: shutting down", sizeof result->error - 1);
        return 0;
    }
    if (!thread_handle) thread_handle = curl_easy_init();
    CURL *curl = thread_handle;
    if (!curl) {
        strncpy(result->error, "curl_easy_init failed", sizeof result->error - 1);
        return 0;
    }
    curl_easy_reset(curl);
    buffer reply = {0};
    struct curl_slist *list = NULL;
    for (size_t i = 0; i < header_count; i++) list = curl_slist_append(list, headers[i]);
    list = curl_slist_append(list, "Expect:");

    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, result);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 2000 ? timeout_ms : 2000);
    set_transport_options(curl, ca_file);
    if (abort_flag) {
        curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_request_progress);
        curl_easy_setopt(curl, CURLOPT_XFERINFODATA, (void *)abort_flag);
    }
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, (const char *)body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_length);
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    }

    CURLcode code = curl_easy_perform(curl);
    curl_slist_free_all(list);
    if (code != CURLE_OK) {
        const char *why = reply.overflow ? "reply too large"
            : (code == CURLE_ABORTED_BY_CALLBACK && aborted(abort_flag)) ? "aborted: shutting down"
            : curl_easy_strerror(code);
        strncpy(result->error, why, sizeof result->error - 1);
        free(reply.data);
        return 0;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result->status);
    result->body = reply.data;
    result->body_length = reply.length;
    return 1;
}

void sc_http_result_free(sc_http_result *result) {
    free(result->body);
    result->body = NULL;
    result->body_length = 0;
}

typedef struct {
    CURL *curl;
    sc_stream_chunk on_chunk;
    sc_stream_stop should_stop;
    void *context;
} stream_state;

static size_t on_stream_data(char *ptr, size_t size, size_t nmemb, void *userdata) {
    stream_state *state = (stream_state *)userdata;
    size_t n = size * nmemb;
    long status = 0;
    curl_easy_getinfo(state->curl, CURLINFO_RESPONSE_CODE, &status);
    return state->on_chunk(state->context, status, (const unsigned char *)ptr, n) ? n : 0;
}

static int on_stream_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    (void)dltotal; (void)dlnow; (void)ultotal; (void)ulnow;
    stream_state *state = (stream_state *)userdata;
    return state->should_stop(state->context) ? 1 : 0;
}

int sc_http_stream(const char *url, const char *const *headers, size_t header_count,
                   long connect_timeout_ms, long idle_timeout_s, const char *ca_file,
                   sc_stream_chunk on_chunk, sc_stream_stop should_stop, void *context,
                   long *status, char *error, size_t error_capacity) {
    *status = 0;
    if (error_capacity) error[0] = 0;
    CURL *curl = curl_easy_init();
    if (!curl) {
        if (error_capacity) snprintf(error, error_capacity, "curl_easy_init failed");
        return 0;
    }
    stream_state state = {curl, on_chunk, should_stop, context};
    struct curl_slist *list = NULL;
    for (size_t i = 0; i < header_count; i++) list = curl_slist_append(list, headers[i]);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_stream_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &state);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_stream_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &state);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, idle_timeout_s);
    set_transport_options(curl, ca_file);
    CURLcode code = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
    if (code != CURLE_OK && error_capacity) snprintf(error, error_capacity, "%s", curl_easy_strerror(code));
    curl_slist_free_all(list);
    curl_easy_cleanup(curl);
    return *status != 0;
}
