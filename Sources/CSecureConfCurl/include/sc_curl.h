#ifndef SECURECONF_CURL_H
#define SECURECONF_CURL_H
#include <stddef.h>

/// The outcome of one HTTP exchange; `body` is malloc'd and freed by sc_http_result_free.
typedef struct {
    long status;
    unsigned char *body;
    size_t body_length;
    char error[256];
    /// The reply's X-SecureConf-Signature header value ("" when absent).
    char signature[160];
} sc_http_result;

/// Performs one HTTP request with libcurl on the calling thread, reusing that thread's
/// easy handle (and so its connection cache). `ca_file` (PEM) replaces the system trust
/// store when not NULL; peers are always verified for https. Returns 1 when a response
/// arrived (any status), 0 on a transport error (then `error` says why).
int sc_http_request(const char *method, const char *url,
                    const char *const *headers, size_t header_count,
                    const unsigned char *body, size_t body_length,
                    long timeout_ms, const char *ca_file,
                    sc_http_result *result);

void sc_http_result_free(sc_http_result *result);

/// Initialises libcurl once per process (call before any thread uses it).
void sc_http_global_init(void);

#endif
