"""Per-word language-model features: batched extraction vs the plain one-word-at-a-time loop.

    python benchmarks/language_features.py [--n-words 600 --context 50 --layers 6 --width 256]

Both read every word with its ``--context`` preceding words through the same randomly
initialised GPT-2 saved as a Hugging Face folder (word-level tokenizer, one token per word) and
keep the last token's hidden state of every block. The plain loop is one forward pass per word
(what a first script does); ``extract_word_features`` right-pads ``--batch-size`` contexts per
pass. Printed: both times, words per second, the speed-up, and the largest difference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "support"))
from language import VOCABULARY, word_table

from brainalign.probe.language import (
    WordSequence,
    extract_word_features,
    load_language_model,
)


def save_model(folder: Path, n_layer: int, width: int) -> None:
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocabulary = ["[UNK]", *VOCABULARY]
    tokenizer = Tokenizer(
        models.WordLevel({word: i for i, word in enumerate(vocabulary)}, unk_token="[UNK]")
    )
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    config = transformers.GPT2Config(
        vocab_size=len(vocabulary),
        n_positions=128,
        n_embd=width,
        n_layer=n_layer,
        n_head=max(1, width // 64),
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    transformers.GPT2Model(config).save_pretrained(folder)
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]"
    ).save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-words", type=int, default=600)
    parser.add_argument("--context", type=int, default=50)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "gpt2"
        save_model(folder, args.layers, args.width)
        model = load_language_model(folder)
    words = WordSequence.from_table(word_table(args.n_words, n_stories=2), "benchmark")
    layers = list(range(model.depth))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(
        f"GPT-2 {args.layers} x {args.width}, {args.n_words} words, context {args.context}, "
        f"device {device}, torch threads {torch.get_num_threads()}"
    )

    start = time.perf_counter()
    batched = extract_word_features(
        model,
        words,
        layers=layers,
        context_words=args.context,
        batch_size=args.batch_size,
        progress=False,
    )
    time_batched = time.perf_counter() - start

    module = model.module.to(device)
    start = time.perf_counter()
    plain = []
    with torch.no_grad():
        for context in words.contexts(args.context):
            ids = torch.tensor([model.encode(context)], device=device)
            hidden = module(input_ids=ids, output_hidden_states=True).hidden_states
            plain.append(torch.stack([hidden[layer + 1][0, -1] for layer in layers]).cpu())
    time_plain = time.perf_counter() - start
    plain_array = torch.stack(plain).numpy()  # (n_words, n_layers, width)
    difference = max(
        float(np.abs(batched[layer] - plain_array[:, index]).max())
        for index, layer in enumerate(layers)
    )
    for label, seconds in (
        ("plain loop (one word per pass)", time_plain),
        ("extract_word_features", time_batched),
    ):
        print(f"{label:<31}: {seconds:7.2f} s  {args.n_words / seconds:7.0f} words/s")
    print(f"speed-up                       : {time_plain / time_batched:7.2f} x")
    print(f"max |difference|               : {difference:.1e}")


if __name__ == "__main__":
    main()
