"""A text VAE for reports (Optimus-style: a BERT encoder, a GPT-2 decoder, one latent vector between them).

MedCoDi-M diffuses the report as one latent vector: an Optimus VAE (Li et al. 2020) maps the report to a
Gaussian posterior over a ``latent_dim`` vector (BERT encoder, pooled, two linear heads) and a GPT-2 decoder
writes the report back from a sample of it. The latent enters the decoder in both of Optimus' ways: as a
"memory" token in front of the sequence and added to every token embedding.

:class:`ReportVAE` also presents the interface the project's trainer and sampler expect of an autoencoder, so the
report stream trains and samples like an image stream:

* ``encode(token_ids)`` -> ``(mu, sigma)``, each ``(B, 1, latent_dim)`` (ids arrive as float when a trainer
  batches them with images; they are exact integers);
* ``decode_stage_2_outputs(z)`` -> greedy-decoded token ids ``(B, max_length)`` (padded);
* :meth:`texts` turns ids back into text.

Both halves are built from a ``transformers`` config (small enough to train on two CPU cores) or loaded from a
local pretrained folder (``encoder_path`` / ``decoder_path``); nothing is downloaded. The encoder's tokenizer is
the default text encoder's (all-MiniLM-L6-v2's uncased WordPiece) unless ``tokenizer_path`` names another; the
decoder uses the same tokenizer unless ``decoder_path`` brings its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ReportVAE"]


def _tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


class ReportVAE(nn.Module):
    """Report <-> one latent vector.

    Args:
        latent_dim: width ``D`` of the latent vector.
        max_length: tokens per report (longer reports are truncated, with a warning-free cut at the end).
        hidden_size: width of the encoder and decoder built from configs.
        encoder_layers: transformer layers of the encoder built from a config.
        decoder_layers: transformer layers of the decoder built from a config.
        heads: attention heads of both.
        tokenizer_path: local tokenizer folder; ``None``: the default text encoder's.
        encoder_path: a local pretrained BERT-like folder (``AutoModel``) instead of a config-built encoder.
        decoder_path: a local pretrained GPT-2-like folder (``AutoModelForCausalLM``, with its own tokenizer)
            instead of a config-built decoder.
        vocabulary_size: rows of the config-built networks' embeddings and output layer: the tokens the reports
            use (:meth:`fit_vocabulary`, kept in the weights), not the tokenizer's whole vocabulary (phantom
            reports use under 200 of MiniLM's 30522 WordPiece tokens, and the output layer over all of them
            costs most of a training step on a CPU). ``None``: the whole vocabulary (required with pretrained
            ``encoder_path`` / ``decoder_path``).
        free_bits: the KL floor per latent dimension (nats; Optimus' lambda): dimensions below it are not pushed
            further towards the prior, which keeps the decoder from ignoring the latent.

    Shapes: ``encode`` ``(B, L)`` ids -> ``(B, 1, D)`` mean and spread; ``decode_stage_2_outputs`` ``(B, 1, D)``
    or ``(B, D)`` -> ``(B, max_length)`` ids; :meth:`loss` takes texts.
    """

    def __init__(
        self,
        latent_dim: int = 64,
        max_length: int = 160,
        hidden_size: int = 128,
        encoder_layers: int = 2,
        decoder_layers: int = 2,
        heads: int = 4,
        tokenizer_path: str | Path | None = None,
        encoder_path: str | Path | None = None,
        decoder_path: str | Path | None = None,
        vocabulary_size: int | None = 512,
        free_bits: float = 0.1,
    ) -> None:
        super().__init__()
        if free_bits < 0:
            raise ValueError(f"free_bits must be >= 0 (nats per latent dimension), got {free_bits}")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        if max_length < 4:
            raise ValueError(f"max_length must be >= 4 tokens (start, text, end), got {max_length}")
        if hidden_size < 1 or hidden_size % heads:
            raise ValueError(f"hidden_size must be a positive multiple of heads ({heads}), got {hidden_size}")
        if vocabulary_size is not None and (encoder_path is not None or decoder_path is not None):
            raise ValueError(
                "vocabulary_size must be None with a pretrained encoder_path or decoder_path (their "
                "embeddings cover their tokenizer's whole vocabulary)"
            )
        if vocabulary_size is not None and vocabulary_size < 8:
            raise ValueError(
                f"vocabulary_size must be >= 8 tokens or None (the whole vocabulary), got {vocabulary_size}"
            )
        from transformers import AutoModel, AutoModelForCausalLM, BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

        from ..text.encoder import default_encoder_path

        self.latent_dim, self.max_length, self.free_bits = int(latent_dim), int(max_length), float(free_bits)
        self.tokenizer = _tokenizer(tokenizer_path or default_encoder_path())
        self.compact = vocabulary_size is not None
        rows = int(vocabulary_size) if self.compact else self.tokenizer.vocab_size
        if self.compact:
            # compact row -> tokenizer id (-1: a free row); the special tokens take the first rows, the reports'
            # tokens the next ones (fit_vocabulary). A buffer, so the weights file carries it.
            specials = list(
                dict.fromkeys(
                    i
                    for i in (
                        self.tokenizer.pad_token_id,
                        self.tokenizer.unk_token_id,
                        *self._start_end(self.tokenizer),
                    )
                    if i is not None
                )
            )
            vocabulary = torch.full((rows,), -1, dtype=torch.long)
            vocabulary[: len(specials)] = torch.tensor(specials)
            self.register_buffer("vocabulary", vocabulary)
            self.specials = len(specials)
            unknown = self.tokenizer.unk_token_id
            self.unknown_row = specials.index(unknown) if unknown is not None else 0  # pad when there is no unknown
        if encoder_path is not None:
            self.encoder = AutoModel.from_pretrained(str(encoder_path), local_files_only=True)
        else:
            self.encoder = BertModel(
                BertConfig(
                    vocab_size=rows,
                    hidden_size=hidden_size,
                    num_hidden_layers=encoder_layers,
                    num_attention_heads=heads,
                    intermediate_size=4 * hidden_size,
                    max_position_embeddings=max_length,
                    pad_token_id=int(self._rows(torch.tensor([self.tokenizer.pad_token_id]))[0]),
                ),
                add_pooling_layer=False,
            )
        if decoder_path is not None:
            self.decoder_tokenizer = _tokenizer(decoder_path)
            self.decoder = AutoModelForCausalLM.from_pretrained(str(decoder_path), local_files_only=True)
        else:
            self.decoder_tokenizer = self.tokenizer
            self.decoder = GPT2LMHeadModel(
                GPT2Config(
                    vocab_size=rows,
                    n_positions=max_length + 1,
                    n_embd=hidden_size,
                    n_layer=decoder_layers,
                    n_head=heads,
                    bos_token_id=None,
                    eos_token_id=None,
                )
            )
        self.start_id, self.end_id = self._start_end(self.decoder_tokenizer)
        pad = self.decoder_tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.end_id
        encoder_width = self.encoder.config.hidden_size
        decoder_width = self.decoder.get_input_embeddings().embedding_dim
        self.to_posterior = nn.Linear(encoder_width, 2 * latent_dim)
        self.to_memory = nn.Linear(latent_dim, decoder_width)  # the latent as a token in front of the sequence
        self.to_embedding = nn.Linear(latent_dim, decoder_width)  # and added to every token's embedding

    @staticmethod
    def _start_end(tokenizer) -> tuple[int, int]:
        start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        if start is None or end is None:
            raise ValueError("the decoder's tokenizer needs start and end tokens ([CLS]/[SEP] or bos/eos)")
        return int(start), int(end)

    # ---- tokens <-> embedding rows -----------------------------------------------------------------------
    def fit_vocabulary(self, texts: Sequence[str]) -> int:
        """Give the compact vocabulary's free rows to the tokens of ``texts``, most frequent first (ties by token
        id); tokens left without a row read as unknown. Returns how many distinct tokens ``texts`` use.

        Raises:
            ValueError: the networks cover the tokenizer's whole vocabulary, or the vocabulary is already fitted.
        """
        from collections import Counter

        if not self.compact:
            raise ValueError(
                "fit_vocabulary: this ReportVAE uses its tokenizer's whole vocabulary (vocabulary_size None)"
            )
        if bool((self.vocabulary[self.specials :] >= 0).any()):
            raise ValueError("fit_vocabulary: the vocabulary is already fitted (fit a fresh ReportVAE)")
        counts: Counter[int] = Counter()
        for text in texts:
            counts.update(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        special_ids = set(self.vocabulary[: self.specials].tolist())
        ranked = sorted((i for i in counts if i not in special_ids), key=lambda i: (-counts[i], i))
        kept = ranked[: len(self.vocabulary) - self.specials]
        if len(ranked) > len(kept):
            import logging

            logging.getLogger(__name__).warning(
                "the reports use %d distinct tokens, the vocabulary has rows for %d: the %d rarest read as unknown "
                "(raise vocabulary_size to keep them)",
                len(ranked),
                len(kept),
                len(ranked) - len(kept),
            )
        if kept:
            self.vocabulary[self.specials : self.specials + len(kept)] = torch.tensor(kept, dtype=torch.long)
        return len(ranked)

    def _rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Tokenizer ids -> embedding rows (a token without a row -> the unknown token's row)."""
        if not self.compact:
            return ids
        used = self.vocabulary >= 0
        size = max(self.tokenizer.vocab_size, int(ids.max()) + 1 if ids.numel() else 1)
        lookup = torch.full((size,), self.unknown_row, dtype=torch.long, device=self.vocabulary.device)
        lookup[self.vocabulary[used]] = torch.arange(len(self.vocabulary), device=self.vocabulary.device)[used]
        return lookup.to(ids.device)[ids]

    def _ids(self, rows: torch.Tensor) -> torch.Tensor:
        """Embedding rows -> tokenizer ids."""
        return self.vocabulary.to(rows.device)[rows].clamp(min=0) if self.compact else rows

    def token_ids(self, texts: Sequence[str]) -> torch.Tensor:
        """Encoder token ids ``(B, max_length)``, padded (what ``encode`` takes, and what a dataset can hold)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a sequence of strings")
        out = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return out["input_ids"]

    def _decoder_targets(self, texts: Sequence[str]) -> torch.Tensor:
        """``[start] text [end]`` as decoder tokenizer ids, ``(B, T)``, padded with ``pad_id``."""
        rows = []
        for text in texts:
            ids = self.decoder_tokenizer(
                text, add_special_tokens=False, truncation=True, max_length=self.max_length - 2
            )["input_ids"]
            rows.append([self.start_id, *ids, self.end_id])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows], dtype=torch.long)

    def texts(self, ids: torch.Tensor) -> list[str]:
        """Decoder tokenizer ids ``(B, T)`` (as ``decode_stage_2_outputs`` gives them) -> texts, each up to its
        first end token."""
        out = []
        for row in ids.tolist():
            row = row[1:] if row and row[0] == self.start_id else row
            row = row[: row.index(self.end_id)] if self.end_id in row else row
            out.append(self.decoder_tokenizer.decode(row, skip_special_tokens=True).strip())
        return out

    # ---- the autoencoder interface ---------------------------------------------------------------------------
    def encode(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder ids ``(B, L)`` (or ``(B, 1, L)``; float is accepted) -> posterior mean and standard deviation,
        ``(B, 1, D)`` each."""
        ids = token_ids.reshape(token_ids.shape[0], -1).round().long().to(self.to_posterior.weight.device)
        mask = (ids != self.tokenizer.pad_token_id).long()
        width = max(int(mask.sum(1).max()), 1)  # the columns after the longest text hold only padding
        ids, mask = ids[:, :width], mask[:, :width]
        states = self.encoder(input_ids=self._rows(ids), attention_mask=mask).last_hidden_state
        pooled = (states * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        mu, log_var = self.to_posterior(pooled).chunk(2, dim=-1)
        return mu.unsqueeze(1), torch.exp(0.5 * log_var.clamp(-30.0, 20.0)).unsqueeze(1)

    def _decoder_inputs(self, z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + T, width)``: the latent's memory token, then the embeddings of ``rows`` plus the latent's."""
        embeddings = self.decoder.get_input_embeddings()(rows) + self.to_embedding(z).unsqueeze(1)
        return torch.cat([self.to_memory(z).unsqueeze(1), embeddings], dim=1)

    def decoder_logits(self, z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits over embedding rows, ``(B, T - 1, rows)``: position ``i`` predicts ``rows[:, i + 1]``
        (``z``: ``(B, D)``)."""
        return self.decoder(inputs_embeds=self._decoder_inputs(z, rows[:, :-1])).logits[:, 1:]

    @torch.no_grad()
    def decode_stage_2_outputs(self, z: torch.Tensor) -> torch.Tensor:
        """Greedy decoding of latents ``(B, 1, D)`` or ``(B, D)`` -> decoder tokenizer ids ``(B, max_length)``
        (the start token first, padded after the end token)."""
        z = z.reshape(z.shape[0], -1).to(self.to_memory.weight)
        if z.shape[1] != self.latent_dim:
            raise ValueError(f"latents must have {self.latent_dim} values, got {tuple(z.shape)}")
        batch = z.shape[0]
        start, end, pad = (int(r) for r in self._rows(torch.tensor([self.start_id, self.end_id, self.pad_id])))
        rows = torch.full((batch, 1), start, dtype=torch.long, device=z.device)
        done = torch.zeros(batch, dtype=torch.bool, device=z.device)
        cache, inputs = None, self._decoder_inputs(z, rows)
        for _ in range(self.max_length - 1):
            out = self.decoder(inputs_embeds=inputs, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            token = torch.where(done, torch.full((batch,), pad, device=z.device), out.logits[:, -1].argmax(-1))
            rows = torch.cat([rows, token[:, None]], dim=1)
            done |= token == end
            if bool(done.all()):
                break
            inputs = self.decoder.get_input_embeddings()(token[:, None]) + self.to_embedding(z).unsqueeze(1)
        rows = F.pad(rows, (0, self.max_length - rows.shape[1]), value=pad)
        return self._ids(rows)

    # ---- training --------------------------------------------------------------------------------------
    def training_losses(
        self, texts: Sequence[str], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """The training terms of a batch of texts: ``reconstruction`` (token cross-entropy, mean over the target
        tokens, end token included), ``kl`` (KL of the posterior to the unit Gaussian: the batch mean per latent
        dimension, each floored at ``free_bits`` as in Optimus, summed over dimensions) and ``token_accuracy``
        (teacher-forced, for logs). The posterior sample's noise comes from ``generator``."""
        device = self.to_posterior.weight.device
        mu, sigma = self.encode(self.token_ids(texts).to(device))
        mu, sigma = mu[:, 0], sigma[:, 0]
        z = mu + sigma * torch.randn(mu.shape, generator=generator).to(mu)
        targets = self._decoder_targets(texts).to(device)
        rows = self._rows(targets)
        logits = self.decoder_logits(z, rows)
        wanted = rows[:, 1:]
        # real targets: everything up to and including the first end token
        real = torch.cumsum((targets[:, 1:] == self.end_id).long(), 1) - (targets[:, 1:] == self.end_id).long() == 0
        cross_entropy = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), wanted.reshape(-1), reduction="none"
        )
        reconstruction = (cross_entropy.view_as(wanted) * real).sum() / real.sum().clamp(min=1)
        kl_per_dimension = 0.5 * (mu.pow(2) + sigma.pow(2) - 2 * torch.log(sigma + 1e-12) - 1).mean(0)
        kl = kl_per_dimension.clamp(min=self.free_bits).sum()
        accuracy = ((logits.argmax(-1) == wanted) & real).sum() / real.sum().clamp(min=1)
        return {"reconstruction": reconstruction, "kl": kl, "token_accuracy": accuracy.detach()}

    @torch.no_grad()
    def training_samples(self, texts: Sequence[str]) -> str:
        """Texts and their reconstructions through the posterior mean, for a trainer's sample file."""
        rebuilt = self.texts(self(list(texts)))
        return "\n\n".join(f"[{i}] input:  {t}\n[{i}] output: {r}" for i, (t, r) in enumerate(zip(texts, rebuilt)))

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Reconstruct texts through the posterior mean: ``(B, max_length)`` ids (use :meth:`texts` to read them)."""
        mu, _ = self.encode(self.token_ids(texts).to(self.to_posterior.weight.device))
        return self.decode_stage_2_outputs(mu)
