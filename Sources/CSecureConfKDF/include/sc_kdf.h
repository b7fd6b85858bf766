#ifndef SECURECONF_KDF_H
#define SECURECONF_KDF_H
#include <stddef.h>
#include <stdint.h>

/// PBKDF2-HMAC-SHA256 (RFC 8018) with the HMAC inner and outer SHA-256 states
/// computed once and reused for every iteration (the fastpbkdf2 technique), on
/// OpenSSL's SHA-256 block function. Returns 1 on success, 0 on invalid arguments.
int sc_pbkdf2_hmac_sha256(const uint8_t *password, size_t password_len,
                          const uint8_t *salt, size_t salt_len,
                          uint32_t iterations,
                          uint8_t *out, size_t out_len);

/// Hashes `blocks` 64-byte blocks with OpenSSL's SHA-256 block function: the
/// work PBKDF2 cannot avoid, used by the benchmark to state the hardware limit.
void sc_sha256_compress_blocks(uint64_t blocks);

/// Lowers the calling thread's scheduling priority (nice +10) so key derivations yield
/// the CPU to request handling. Best effort; no effect where the system refuses.
void sc_lower_thread_priority(void);

#endif
