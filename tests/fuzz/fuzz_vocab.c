/* fuzz_vocab.c — vocab.txt loading on arbitrary bytes, then a tokenization with what loaded
 * (text/tokenizer.h). */
#include "fuzz_common.h"
#include "text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    bp_err err;
    for (int lowercase = 0; lowercase < 2; lowercase++) {
        tok_tokenizer *tok = tok_load(fuzz_input_file(data, size), lowercase, &err);
        if (!tok) continue;
        static const char text[] = "The café's [CLS] unaffable ##ing 東京 🙂 [MASK] end.";
        tok_encoding enc;
        tok_encoding_init(&enc);
        tok_encode_pair(tok, "who?", 4, text, sizeof text - 1, 16, 4, 1, NULL, &enc, &err);
        for (int32_t id = -1; id <= tok_vocab_size(tok); id++) (void)tok_id_to_token(tok, id);
        tok_encoding_free(&enc);
        tok_free(tok);
    }
    return 0;
}
