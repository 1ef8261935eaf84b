#!/usr/bin/env python3
"""Monotone word-for-word baseline for the synthetic en-de corpus.

    python corpora/baseline.py [--data corpora/en-de] [--split test]

Every English word (lowercased, punctuation split off) is replaced by the
German word it is most strongly associated with in the *training* data, and
the English word order is kept.  The association is the Dice coefficient of
sentence co-occurrence,

    dice(e, g) = 2 * count(e and g in the same pair) / (count(e) + count(g)),

computed from train.en / train.de only (the generator's lexicon is not
used).  English words whose best Dice score is below --min-dice are dropped
(with the default 0.25 these are "does" and "do", which have no German
counterpart).  Punctuation is copied, the first letter is capitalized.

The point: such a system knows every word but cannot reorder (verb-second,
verb-final, separable prefixes) or choose inflections by context (der/den/
dem, adjective endings), so its BLEU is low.  A model with attention should
beat it by a wide margin.
"""

import argparse
import collections
import os
import re

import sacrebleu

TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(line):
    return TOKEN.findall(line)


def is_word(token):
    return token[0].isalnum()


def read(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def true_case_table(de_sentences):
    """German sentence-initial words are capitalized; map them back to the
    case they have inside sentences ("Heute" -> "heute", "Der" -> "der")."""
    inside = collections.Counter()
    for tokens in de_sentences:
        inside.update(tokens[1:])
    table = {}
    for tokens in de_sentences:
        first = tokens[0]
        if inside[first.lower()] > inside[first]:
            table[first] = first.lower()
    return table


def dice_table(en_sentences, de_sentences):
    """For every English word the German word with the highest Dice score."""
    count_en, count_de = collections.Counter(), collections.Counter()
    joint = collections.Counter()
    for en, de in zip(en_sentences, de_sentences):
        en_types = sorted({t for t in en if is_word(t)})
        de_types = sorted({t for t in de if is_word(t)})
        count_en.update(en_types)
        count_de.update(de_types)
        for e in en_types:
            for g in de_types:
                joint[e, g] += 1
    best = {}
    for (e, g), c in sorted(joint.items()):
        score = 2.0 * c / (count_en[e] + count_de[g])
        if e not in best or score > best[e][0]:   # ties: alphabetically first g
            best[e] = (score, g)
    return best


def detokenize(tokens):
    text = " ".join(tokens)
    return re.sub(r" ([.,?!])", r"\1", text)


def translate(line, table, min_dice):
    out = []
    for token in tokenize(line.lower()):
        if not is_word(token):
            out.append(token)
        elif token in table and table[token][0] >= min_dice:
            out.append(table[token][1])
    if out:
        out[0] = out[0][0].upper() + out[0][1:]
    return detokenize(out)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.path.join(here, "en-de"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--min-dice", type=float, default=0.25)
    parser.add_argument("--show", type=int, default=3, help="print N example translations")
    args = parser.parse_args()

    train_en = [tokenize(s.lower()) for s in read(os.path.join(args.data, "train.en"))]
    train_de = [tokenize(s) for s in read(os.path.join(args.data, "train.de"))]
    recase = true_case_table(train_de)
    train_de = [[recase.get(t, t) if i == 0 else t for i, t in enumerate(s)]
                for s in train_de]
    table = dice_table(train_en, train_de)

    sources = read(os.path.join(args.data, args.split + ".en"))
    references = read(os.path.join(args.data, args.split + ".de"))
    hypotheses = [translate(s, table, args.min_dice) for s in sources]
    for src, hyp, ref in list(zip(sources, hypotheses, references))[: args.show]:
        print("SRC ", src)
        print("HYP ", hyp)
        print("REF ", ref)
        print()
    bleu = sacrebleu.corpus_bleu(hypotheses, [references])   # cased, 13a
    metric = sacrebleu.BLEU()
    assert metric.corpus_score(hypotheses, [references]).score == bleu.score
    print("baseline BLEU on %s: %.2f" % (args.split, bleu.score))
    print(bleu)
    print("signature:", metric.get_signature())


if __name__ == "__main__":
    main()
