"""Does a bigger model let the hallucination probe beat min-probability on the bios world?

    python bench/probe_scale_gpu.py [--sizes small,large,xl] [--people 160] [--samples 4] [--json PATH]

Issue 5 asks for a probe that beats the min-probability baseline's AUC "on the demo data";
on the bundled tiny models it does not (span AUC 0.55–0.72 against 0.96–1.00). This script
asks whether model size is the reason, on a GPU, with nothing but torch and transformers
(no lake, no Prefect, so it runs on a bare GPU box):

1. train the shared tokenizer and, per size, a Llama from scratch on the bios world's train
   split only (`builder.train_model`, the bundled models' recipe) — `small` and `large` are
   the bundled shapes, `xl` is 8 layers × 512 wide;
2. sample `--samples` biographies at temperature 1 for `--people` known (train-split) and as
   many unknown (test-split) people; per stated attribute span (the world's own patterns)
   the label is supported / not supported against the knowledge base, its min and mean token
   probability come from the sampling distribution, and its tokens' hidden states from the
   layer before the last;
3. per size, a linear probe (token BCE, positives weighted, then max over each span's
   tokens, as `tasks/train/probe.py`) is trained on half the people and evaluated on the
   other half, next to 1 − min prob and 1 − mean prob, by span-level ROC AUC.

Prints one table (size, params, train loss, spans, share not supported, AUCs) and, with
`--json`, writes it. A figure this script prints is a measurement, not a test: it informs
the planners' decision on issue 5's target.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tokenmill.models import builder
from tokenmill.sources.worlds.bios import _PATTERNS, BiosWorld
from tokenmill.tasks.train.metrics import roc_auc

SIZES = {
    "small": builder.SPECS["tiny-small"],
    "large": builder.SPECS["tiny-large"],
    "xl": builder.TinySpec(hidden=512, layers=8, heads=8, intermediate=1536, steps=6000, lr=6e-4, batch=64),
}


def train(spec, tok, data, device, steps=None):
    builder.MIX = {"bios": 1.0}  # bios only: the question is about its facts
    torch.set_default_device(device)
    try:
        model, losses = builder.train_model(spec, tok, data, steps)
    finally:
        torch.set_default_device("cpu")
    return model.to(device).eval(), float(np.mean(losses[-50:]))


@torch.no_grad()
def sample(model, tok, prompts: list[str], samples: int, device, max_new: int = 48, seed: int = 0):
    """Per prompt × sample: completion ids, each token's probability, layer −2 states."""
    torch.manual_seed(seed)
    tok.padding_side = "left"
    enc = tok([p for p in prompts for _ in range(samples)], return_tensors="pt", padding=True).to(device)
    out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
    gen = out.sequences[:, enc["input_ids"].shape[1]:]
    logp = torch.stack(out.scores, 1).float().log_softmax(-1)
    prob = logp.gather(-1, gen.unsqueeze(-1)).squeeze(-1).exp()
    full = torch.cat([enc["input_ids"], gen], 1)
    attn = torch.cat([enc["attention_mask"], (gen != tok.pad_token_id).long()], 1)
    hs = model(input_ids=full, attention_mask=attn, output_hidden_states=True).hidden_states[-2]
    return gen.cpu(), prob.cpu(), hs[:, enc["input_ids"].shape[1]:].float().cpu()


def spans_of(tok, ids: list[int], person: dict) -> list[tuple[int, int, int]]:
    """(first token, last token, 1 = not supported) of each stated attribute."""
    eos = tok.eos_token_id
    ids = ids[: ids.index(eos)] if eos in ids else ids
    pieces = [tok.decode([i]) for i in ids]
    ends = np.cumsum([len(p) for p in pieces])
    starts = ends - np.array([len(p) for p in pieces])
    text = "".join(pieces)
    out = []
    for attr, pat in _PATTERNS.items():
        m = pat.search(text)
        if not m:
            continue
        a, b = m.span(1)
        toks = np.flatnonzero((starts < b) & (ends > a))
        if len(toks):
            out.append((int(toks[0]), int(toks[-1]), int(m.group(1).strip() != str(person[attr]))))
    return out


def probe_auc(x, y, span_tok, train_mask, steps=400, seed=0):
    """Linear probe on train tokens; span score = max token probability (held-out spans)."""
    torch.manual_seed(seed)
    mu, sd = x[train_mask].mean(0), x[train_mask].std(0) + 1e-6
    xs = (x - mu) / sd
    head = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-3)
    yt, m = torch.tensor(y, dtype=torch.float32), torch.tensor(train_mask)
    pw = torch.tensor((m.sum() - yt[m].sum()) / max(float(yt[m].sum()), 1.0))
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(xs[m]).squeeze(-1), yt[m], pos_weight=pw)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        p = torch.sigmoid(head(xs).squeeze(-1)).numpy()
    return np.array([p[a:b + 1].max() for a, b in span_tok])


def run_size(name, spec, tok, data, people, samples, device, steps=None) -> dict:
    t0 = time.time()
    model, loss = train(spec, tok, data, device, steps)
    rows = []  # one per span: person index, known, label, min prob, mean prob, its token rows
    xs, ys = [], []
    for known, group in (("known", people["known"]), ("unknown", people["unknown"])):
        for i in range(0, len(group), 32):
            chunk = group[i:i + 32]
            gen, prob, hs = sample(model, tok, [f"Tell me about {p.name}.\n" for p in chunk], samples, device)
            for r in range(gen.shape[0]):
                person = chunk[r // samples]
                for a, b, y in spans_of(tok, gen[r].tolist(), person.__dict__):
                    base = sum(len(v) for v in ys)
                    xs.append(hs[r, a:b + 1])
                    ys.append(np.full(b - a + 1, y))
                    rows.append({"person": person.name, "known": known, "y": y, "min": float(prob[r, a:b + 1].min()),
                                 "mean": float(prob[r, a:b + 1].mean()), "tok": (base, base + b - a)})
    if not rows:  # an undertrained model states no attribute the patterns can read
        return {"size": name, "spans": 0, "train_loss": round(loss, 4), "seconds": round(time.time() - t0, 1)}
    x = torch.cat(xs)
    y = np.concatenate(ys)
    names = sorted({r["person"] for r in rows})
    random.Random(0).shuffle(names)
    held = set(names[: len(names) // 2])
    train_mask = np.zeros(len(y), bool)
    for r in rows:
        if r["person"] not in held:
            train_mask[r["tok"][0]:r["tok"][1] + 1] = True
    probe = probe_auc(x, y, [r["tok"] for r in rows], train_mask)
    ho = np.array([r["person"] in held for r in rows])
    sy = np.array([r["y"] for r in rows])
    mn, me = np.array([r["min"] for r in rows]), np.array([r["mean"] for r in rows])
    known_supported = np.mean([1 - r["y"] for r in rows if r["known"] == "known"]) if rows else float("nan")
    return {"size": name, "params": sum(p.numel() for p in model.parameters()), "train_loss": round(loss, 4),
            "spans": len(rows), "not_supported": round(float(sy.mean()), 3), "known_supported": round(float(known_supported), 3),
            "auc_probe": round(roc_auc(probe[ho], sy[ho]), 3), "auc_1-min_prob": round(roc_auc(1 - mn[ho], sy[ho]), 3),
            "auc_1-mean_prob": round(roc_auc(1 - me[ho], sy[ho]), 3), "seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="small,large,xl")
    ap.add_argument("--people", type=int, default=160, help="known and as many unknown people")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None, help="override every size's training steps (smoke runs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pairs = builder.corpus()
    tok = builder.save_tokenizer(pairs, Path(tempfile.mkdtemp(prefix="probe-scale-tok-")))
    data = {"bios": builder.encode_pairs(tok, pairs["bios"])}
    world = BiosWorld()
    known = [p for p in world.kb if world.split_of_person(p.name) == "train"][: args.people]
    unknown = [p for p in world.kb if world.split_of_person(p.name) == "test"][: args.people]
    results = []
    for name in args.sizes.split(","):
        results.append(run_size(name, SIZES[name], tok, data, {"known": known, "unknown": unknown},
                                args.samples, device, args.steps))
        print(json.dumps(results[-1]), flush=True)
    cols = max((list(r) for r in results), key=len)
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
