#define OPENSSL_SUPPRESS_DEPRECATED 1
#include "sc_kdf.h"
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static void store_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);  p[3] = (uint8_t)v;
}

static void state_to_bytes(const SHA256_CTX *ctx, uint8_t out[32]) {
    for (int i = 0; i < 8; i++) store_be32(out + 4 * i, (uint32_t)ctx->h[i]);
}

/// The SHA-256 states after absorbing (key ^ ipad) and (key ^ opad).
static void hmac_key_states(const uint8_t *key, size_t key_len,
                            SHA256_CTX *inner, SHA256_CTX *outer) {
    uint8_t k[64];
    uint8_t pad[64];
    memset(k, 0, sizeof k);
    if (key_len > 64) {
        SHA256(key, key_len, k);
    } else if (key_len > 0) {
        memcpy(k, key, key_len);
    }
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
    SHA256_Init(inner);
    SHA256_Update(inner, pad, 64);
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
    SHA256_Init(outer);
    SHA256_Update(outer, pad, 64);
    OPENSSL_cleanse(k, sizeof k);
    OPENSSL_cleanse(pad, sizeof pad);
}

/// A 64-byte block holding a 32-byte message that follows one 64-byte block
/// already absorbed: message, 0x80, zeros, and the 96-byte length in bits.
static void prepare_block(uint8_t block[64]) {
    memset(block, 0, 64);
    block[32] = 0x80;
    block[62] = 0x03; /* 768 bits = 0x0300 */
    block[63] = 0x00;
}

int sc_pbkdf2_hmac_sha256(const uint8_t *password, size_t password_len,
                          const uint8_t *salt, size_t salt_len,
                          uint32_t iterations,
                          uint8_t *out, size_t out_len) {
    if (iterations == 0 || out == NULL || out_len == 0) return 0;
    if ((password == NULL && password_len) || (salt == NULL && salt_len)) return 0;

    SHA256_CTX inner, outer, ctx;
    hmac_key_states(password, password_len, &inner, &outer);

    uint8_t u_block[64], h_block[64], t[32], counter[4];
    prepare_block(u_block);
    prepare_block(h_block);

    uint32_t block_index = 1;
    size_t written = 0;
    while (written < out_len) {
        /* U1 = HMAC(P, S || INT(i)) */
        store_be32(counter, block_index);
        ctx = inner;
        SHA256_Update(&ctx, salt, salt_len);
        SHA256_Update(&ctx, counter, 4);
        SHA256_Final(h_block, &ctx);
        ctx = outer;
        SHA256_Update(&ctx, h_block, 32);
        SHA256_Final(u_block, &ctx);
        /* SHA256_Final wrote over the padding bytes' neighbours only in [0,32). */
        memcpy(t, u_block, 32);

        for (uint32_t j = 1; j < iterations; j++) {
            ctx = inner;
            SHA256_Transform(&ctx, u_block);
            state_to_bytes(&ctx, h_block);
            ctx = outer;
            SHA256_Transform(&ctx, h_block);
            state_to_bytes(&ctx, u_block);
            for (int k = 0; k < 32; k++) t[k] ^= u_block[k];
        }

        size_t take = out_len - written < 32 ? out_len - written : 32;
        memcpy(out + written, t, take);
        written += take;
        block_index++;
    }

    OPENSSL_cleanse(&inner, sizeof inner);
    OPENSSL_cleanse(&outer, sizeof outer);
    OPENSSL_cleanse(&ctx, sizeof ctx);
    OPENSSL_cleanse(u_block, sizeof u_block);
    OPENSSL_cleanse(h_block, sizeof h_block);
    OPENSSL_cleanse(t, sizeof t);
    return 1;
}

void sc_sha256_compress_blocks(uint64_t blocks) {
    SHA256_CTX ctx;
    uint8_t block[64];
    memset(block, 0xa5, sizeof block);
    SHA256_Init(&ctx);
    for (uint64_t i = 0; i < blocks; i++) SHA256_Transform(&ctx, block);
    state_to_bytes(&ctx, block);
    OPENSSL_cleanse(&ctx, sizeof ctx);
}

void sc_lower_thread_priority(void) {
#ifdef SYS_gettid
    static __thread int lowered = 0;
    if (!lowered) {
        (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
        lowered = 1;
    }
#endif
}
