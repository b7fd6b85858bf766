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

/// A flag that ends every request given it, in flight or later (a node shutting down).
typedef struct sc_http_abort sc_http_abort;
sc_http_abort *sc_http_abort_new(void);
/// Sets the flag: requests in flight end within about a second (libcurl asks at least that
/// often, also while nothing arrives), later ones at once.
void sc_http_abort_trigger(sc_http_abort *flag);
void sc_http_abort_free(sc_http_abort *flag);

/// Performs one HTTP request with libcurl on the calling thread, reusing that thread's
/// easy handle (and so its connection cache). `ca_file` (PEM) replaces the system trust
/// store when not NULL; peers are always verified for https. `abort_flag` (may be NULL) ends
/// it early. Returns 1 when a response arrived (any status), 0 on a transport error or an
/// abort (then `error` says why).
int sc_http_request(const char *method, const char *url,
                    const char *const *headers, size_t header_count,
                    const unsigned char *body, size_t body_length,
                    long timeout_ms, const char *ca_file,
                    const sc_http_abort *abort_flag,
                    sc_http_result *result);

void sc_http_result_free(sc_http_result *result);

/// Receives a streamed reply's bytes as they arrive, with the reply's status; returns 1 to go
/// on, 0 to end the transfer.
typedef int (*sc_stream_chunk)(void *context, long status, const unsigned char *data, size_t length);
/// Asked about once a second, also while nothing arrives; nonzero ends the transfer.
typedef int (*sc_stream_stop)(void *context);

/// Performs one GET on the calling thread with its own easy handle, handing the body to
/// `on_chunk` as it arrives, until the node ends it, `on_chunk` returns 0, `should_stop`
/// returns nonzero, or nothing arrives for `idle_timeout_s` seconds. Verification and
/// `ca_file` as for sc_http_request. Returns 1 when a reply arrived (its status in `status`;
/// however it ended after that), 0 when none did (then `error` says why).
int sc_http_stream(const char *url, const char *const *headers, size_t header_count,
                   long connect_timeout_ms, long idle_timeout_s, const char *ca_file,
                   sc_stream_chunk on_chunk, sc_stream_stop should_stop, void *context,
                   long *status, char *error, size_t error_capacity);

/// Initialises libcurl once per process (call before any thread uses it).
void sc_http_global_init(void);

#endif
