// gen_unicode_delta.js — asks the reference (npm @anush008/tokenizers, Hugging Face's Rust
// tokenizers) how BERT's normalizer and pre-tokenizer treat every Unicode code point, one line
// per code point on stdout:  HEX <TAB> clean <TAB> pieces <TAB> uncased
//   clean:   D = removed by clean_text, W = turned into a space, - = kept
//   pieces:  pre-tokens of "a" + char + "a" (1 = word char, 2 = whitespace, 3 = punctuation)
//   uncased: the char after strip_accents + lowercase, as space-separated hex code points
// tests/reference/gen_unicode_delta.sh turns this into common/text/unicode_delta.c.
'use strict';
const t = require('@anush008/tokenizers');
const clean = t.bertNormalizer({ cleanText: true, handleChineseChars: false, stripAccents: false, lowercase: false });
const uncased = t.bertNormalizer({ cleanText: false, handleChineseChars: false, stripAccents: true, lowercase: true });
const pre = t.bertPreTokenizer();
const lines = [];
for (let cp = 0; cp <= 0x10ffff; cp++) {
  if (cp >= 0xd800 && cp <= 0xdfff) continue; // not representable in UTF-8
  const c = String.fromCodePoint(cp);
  const probe = 'a' + c + 'a';
  const cleaned = clean.normalizeString(probe);
  const cleanClass = cleaned === 'aa' ? 'D' : (cleaned === 'a a' && c !== ' ' ? 'W' : '-');
  const pieces = pre.preTokenizeString(probe).length;
  const mapped = Array.from(uncased.normalizeString(probe).slice(1, -1))
    .map((x) => x.codePointAt(0).toString(16)).join(' ');
  lines.push(`${cp.toString(16)}\t${cleanClass}\t${pieces}\t${mapped}`);
}
process.stdout.write(lines.join('\n') + '\n');
