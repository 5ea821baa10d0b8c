#!/usr/bin/env node
// tokenize_ref.js — the reference BERT tokenizer for bertpipe's tests, parity and benchmarks:
// Hugging Face's Rust `tokenizers` (npm @anush008/tokenizers) set up as BertTokenizerFast is:
// BertNormalizer (clean text, CJK, strip accents = lowercase), BertPreTokenizer, WordPiece
// ("##", [UNK], 100 chars), [CLS] A [SEP] (B [SEP]) and the BERT specials as added tokens.
//
//   node tokenize_ref.js --vocab V [--lowercase 0|1] [--max-length 384] [--stride 128] [--pad]
//                        [--bench [--batch]] < in.jsonl > out.jsonl
//
// Input lines: {"id":..,"text":..} (single: truncated to max length) or
//   {"id":..,"question":..,"context":..[,"answer_start":N,"answer_text":".."]} (pair:
//   truncation only_second, overflow windows with stride, labels as HF run_qa computes them).
// Output lines: {"id":..,"windows":[{"ids","type_ids","mask","seq","offsets"}],"labels":[[s,e]..]}
//   or {"id":..,"error":"question_too_long"|"stride"}; an answer that does not slice the context
//   gives the windows and "error":"answer_mismatch" instead of labels. tests/tools/tokenize_dump.c
//   writes the same shape. --bench: no output; prints "MB/s bytes seconds windows" of the encode calls
//   (--batch: single texts through encodeBatch, 1000 at a time, instead of one encode each).
// Single-threaded: one encode at a time (TOKENIZERS_PARALLELISM=false, RAYON_NUM_THREADS=1,
// UV_THREADPOOL_SIZE=1 are set below before the native module loads).
'use strict';
process.env.TOKENIZERS_PARALLELISM = 'false';
process.env.RAYON_NUM_THREADS = '1';
process.env.UV_THREADPOOL_SIZE = '1';
const fs = require('fs');
const readline = require('readline');
const tk = require('@anush008/tokenizers');

function parseArgs(argv) {
  const opts = { vocab: null, lowercase: 1, maxLength: 384, stride: 128, pad: false, bench: false, batch: false };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--vocab') opts.vocab = argv[++i];
    else if (a === '--lowercase') opts.lowercase = Number(argv[++i]);
    else if (a === '--max-length') opts.maxLength = Number(argv[++i]);
    else if (a === '--stride') opts.stride = Number(argv[++i]);
    else if (a === '--pad') opts.pad = true;
    else if (a === '--bench') opts.bench = true;
    else if (a === '--batch') opts.batch = true;
    else throw new Error(`unknown option ${a}`);
  }
  if (!opts.vocab) throw new Error('--vocab is required');
  return opts;
}

async function makeTokenizer(opts) {
  const vocabLines = fs.readFileSync(opts.vocab, 'utf8').split('\n').map((l) => l.trimEnd());
  const idOf = (t) => vocabLines.lastIndexOf(t);
  const model = await tk.WordPiece.fromFile(opts.vocab, {
    unkToken: '[UNK]', continuingSubwordPrefix: '##', maxInputCharsPerWord: 100,
  });
  const tokenizer = new tk.Tokenizer(model);
  const lower = opts.lowercase === 1;
  tokenizer.setNormalizer(tk.bertNormalizer({
    cleanText: true, handleChineseChars: true, stripAccents: lower, lowercase: lower,
  }));
  tokenizer.setPreTokenizer(tk.bertPreTokenizer());
  tokenizer.setPostProcessor(tk.bertProcessing(['[SEP]', idOf('[SEP]')], ['[CLS]', idOf('[CLS]')]));
  // BertTokenizerFast registers its specials as added tokens: found in raw text, never split.
  tokenizer.addSpecialTokens(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'].filter((t) => idOf(t) >= 0));
  if (opts.pad) {
    tokenizer.setPadding({ maxLength: opts.maxLength, padId: idOf('[PAD]'), padTypeId: 0, padToken: '[PAD]' });
  }
  return { tokenizer, clsId: idOf('[CLS]') };
}

function windowOf(e) {
  return {
    ids: e.getIds(), type_ids: e.getTypeIds(), mask: e.getAttentionMask(),
    seq: e.getSequenceIds().map((s) => (s === null || s === undefined ? -1 : s)),
    offsets: e.getOffsets(),
  };
}

// Hugging Face run_qa prepare_train_features, line for line (offsets as the tokenizer returns).
function labelsOf(windows, clsId, startChar, endChar) {
  return windows.map((w) => {
    const cls = w.ids.indexOf(clsId);
    const seq = w.seq, offsets = w.offsets;
    let first = 0;
    while (first < seq.length && seq[first] !== 1) first++;
    // No context token in the window (a context of only removed chars): run_qa raises
    // IndexError here; bertpipe labels [CLS] instead (docs/tokenize.md).
    if (first === seq.length) return [cls, cls];
    let last = w.ids.length - 1;
    while (seq[last] !== 1) last--;
    if (!(offsets[first][0] <= startChar && offsets[last][1] >= endChar)) return [cls, cls];
    while (first < offsets.length && offsets[first][0] <= startChar) first++;
    while (offsets[last][1] >= endChar) last--;
    return [first - 1, last + 1];
  });
}

async function encodeLine(ref, opts, ex) {
  const out = {};
  if (ex.id !== undefined) out.id = ex.id;
  const tokenizer = ref.tokenizer;
  if (ex.text !== undefined) {
    const e = await tokenizer.encode(ex.text, null);
    out.windows = [windowOf(e)];
    return out;
  }
  // The Rust core panics (aborting the process) when the stride does not fit, and errors when
  // the question leaves no room: decide both from the question's length first.
  const q = await ref.plain.encode(ex.question, null, { addSpecialTokens: false });
  const c = await ref.plain.encode(ex.context, null, { addSpecialTokens: false });
  const nq = q.getLength(), nc = c.getLength();
  if (nq + nc + 3 > opts.maxLength) {
    if (nq + 3 >= opts.maxLength) { out.error = 'question_too_long'; return out; }
    if (opts.stride >= opts.maxLength - 3 - nq) { out.error = 'stride'; return out; }
  }
  const e = await tokenizer.encode(ex.question, ex.context);
  out.windows = [e, ...e.getOverflowing()].map(windowOf);
  if (ex.answer_start !== undefined) {
    const chars = Array.from(ex.context);
    const answerChars = Array.from(ex.answer_text);
    const start = ex.answer_start;
    if (answerChars.length === 0 || start < 0 ||
        chars.slice(start, start + answerChars.length).join('') !== ex.answer_text) {
      out.error = 'answer_mismatch';
      return out;
    }
    out.labels = labelsOf(out.windows, ref.clsId, start, start + answerChars.length);
  }
  return out;
}

async function main() {
  const opts = parseArgs(process.argv);
  const ref = await makeTokenizer(opts);
  ref.plain = (await makeTokenizer({ ...opts, pad: false })).tokenizer;
  ref.plain.disableTruncation();
  const examples = [];
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) if (line.length) examples.push(JSON.parse(line));

  if (opts.bench) {
    // Time only the encode calls HF users make: singles truncated, pairs with windows.
    const { tokenizer } = ref;
    let bytes = 0;
    for (const ex of examples) {
      bytes += ex.text !== undefined ? Buffer.byteLength(ex.text)
        : Buffer.byteLength(ex.question) + Buffer.byteLength(ex.context);
    }
    if (opts.batch && examples.some((ex) => ex.text === undefined)) throw new Error('--batch takes single texts only');
    if (examples.length && examples[0].text === undefined) {
      tokenizer.setTruncation(opts.maxLength, { strategy: 'OnlySecond', stride: opts.stride });
    } else {
      tokenizer.setTruncation(opts.maxLength);
    }
    const t0 = process.hrtime.bigint();
    let windows = 0;
    if (opts.batch) {
      // encodeBatch takes single texts only; 1000 per call as datasets.map(batched=True) does.
      for (let i = 0; i < examples.length; i += 1000) {
        const batch = await tokenizer.encodeBatch(examples.slice(i, i + 1000).map((ex) => ex.text));
        windows += batch.length;
      }
    } else {
      for (const ex of examples) {
        const e = ex.text !== undefined ? await tokenizer.encode(ex.text, null)
          : await tokenizer.encode(ex.question, ex.context);
        windows += 1 + e.getOverflowing().length;
      }
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    process.stdout.write(`${(bytes / 1e6 / seconds).toFixed(3)} ${bytes} ${seconds.toFixed(3)} ${windows}\n`);
    return;
  }

  const out = [];
  for (const ex of examples) {
    const isSingle = ex.text !== undefined;
    if (isSingle) ref.tokenizer.setTruncation(opts.maxLength);
    else ref.tokenizer.setTruncation(opts.maxLength, { strategy: 'OnlySecond', stride: opts.stride });
    out.push(JSON.stringify(await encodeLine(ref, opts, ex)));
  }
  process.stdout.write(out.length ? out.join('\n') + '\n' : '');
}

main().catch((err) => { process.stderr.write(`tokenize_ref.js: error: ${err.message}\n`); process.exit(1); });
