// SwiftPM (tools version >= 5.5) links every executable with `--defsym main=<Module>_main`,
// because it compiles an executable module's entry point under that name. The harnesses are
// built with -parse-as-library (they have no entry point of their own: libFuzzer's is the
// one wanted), so nothing defines <Module>_main and the link fails. These definitions fill
// the gap by handing over to libFuzzer's documented driver entry point.
//
// The -DFUZZ_STANDALONE fallback build (no libFuzzer) has a Swift @main instead.
#ifndef FUZZ_STANDALONE
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int FuzzFernet_main(int argc, char **argv) { return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput); }
int FuzzJSON_main(int argc, char **argv) { return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput); }
int FuzzReplication_main(int argc, char **argv) { return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput); }
#endif
