// Reads texts separated by "\x01SEP\x01\n" from argv[2]; prints ids per text (one line) for
// four settings: add_special x parse_special, as "A P: ids".
#include "llama.h"
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>
static void quiet(ggml_log_level, const char *, void *) {}
int main(int argc, char ** argv) {
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    auto mp = llama_model_default_params();
    mp.vocab_only = true;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "load failed\n"); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    std::ifstream in(argv[2], std::ios::binary);
    std::stringstream ss; ss << in.rdbuf();
    std::string all = ss.str();
    const std::string sep = "\x01SEP\x01\n";
    size_t pos = 0;
    std::vector<llama_token> toks;
    while (pos < all.size()) {
        size_t next = all.find(sep, pos);
        if (next == std::string::npos) next = all.size();
        std::string text = all.substr(pos, next - pos);
        pos = next + sep.size();
        for (int a = 0; a < 2; a++) for (int p = 0; p < 2; p++) {
            toks.resize(text.size() * 2 + 16);
            int n = llama_tokenize(vocab, text.data(), text.size(), toks.data(), toks.size(), a, p);
            if (n < 0) { toks.resize(-n); n = llama_tokenize(vocab, text.data(), text.size(), toks.data(), toks.size(), a, p); }
            printf("%d%d:", a, p);
            for (int i = 0; i < n; i++) printf(" %d", toks[i]);
            printf("\n");
        }
        // detokenize (special=true, remove_special=false) of the a=0,p=1 tokens as hex
        int n = llama_tokenize(vocab, text.data(), text.size(), toks.data(), toks.size(), false, true);
        std::vector<char> buf(text.size() * 4 + 256);
        int m = llama_detokenize(vocab, toks.data(), n, buf.data(), buf.size(), false, true);
        if (m < 0) { buf.resize(-m); m = llama_detokenize(vocab, toks.data(), n, buf.data(), buf.size(), false, true); }
        printf("D:");
        for (int i = 0; i < m; i++) printf("%02x", (unsigned char) buf[i]);
        printf("\n");
    }
    llama_model_free(model);
    return 0;
}
