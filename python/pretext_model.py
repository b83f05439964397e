"""The pretext model rebuilt in PyTorch, from a `model.safetensors` and the
`ModelConfig` JSON that pretext writes (checkpoint `state.json` key `model`,
or the `config.json` of `pretext export`). Parameter names are the tch ones
(`encoder.block3.conv1.weight`).

    model = load("export/")                        # `pretext export RUN --out export`
    logits = model(tokens, lengths)                # pretrain: [N, 41, L]; classifier: [N, K]

`tokens` is int64 [N, L] (values 0..=40, 41 = MASK, 42 = PAD after each
row's length), `lengths` int64 [N]. `load` also takes a checkpoint
directory (`run/checkpoints/step-000100`). Only torch and the standard
library are needed (safetensors is read by hand).
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F
from torch import nn

NUM_VALUES, MASK_TOKEN, PAD_TOKEN, NUM_TOKENS = 41, 41, 42, 43
NORM_EPS = 1e-5
_DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32,
           "U8": torch.uint8, "BF16": torch.bfloat16, "F16": torch.float16}


def read_safetensors(path):
    """{name: tensor} from a .safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=_DTYPES[meta["dtype"]])
        out[name] = t.reshape(meta["shape"]).clone()
    return out


class MaskedNorm(nn.Module):
    def __init__(self, c, kind, groups):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.kind, self.groups = kind, groups

    def forward(self, x, mask):  # x [N, C, L], mask [N, 1, L]
        n, c, l = x.shape
        if self.kind == "layer":
            mean = x.mean(1, keepdim=True)
            centred = x - mean
            var = centred.square().mean(1, keepdim=True)
            y = centred * torch.rsqrt(var + NORM_EPS)
        else:
            g = self.groups
            xg = x.view(n, g, c // g, l)
            m = mask.view(n, 1, 1, l)
            count = m.sum((2, 3), keepdim=True) * (c // g)
            mean = (xg * m).sum((2, 3), keepdim=True) / count
            centred = (xg - mean) * m
            var = centred.square().sum((2, 3), keepdim=True) / count
            y = (centred * torch.rsqrt(var + NORM_EPS)).view(n, c, l)
        return (y * self.weight.view(c, 1) + self.bias.view(c, 1)) * mask


class DilatedConv(nn.Module):
    def __init__(self, cin, cout, k, dilation, causal):
        super().__init__()
        bound = 1 / math.sqrt(cin * k)
        self.weight = nn.Parameter(torch.empty(cout, cin, k).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(cout).uniform_(-bound, bound))
        self.span, self.dilation, self.causal = (k - 1) * dilation, dilation, causal

    def forward(self, x):
        if self.causal:
            return F.conv1d(F.pad(x, (self.span, 0)), self.weight, self.bias, dilation=self.dilation)
        return F.conv1d(x, self.weight, self.bias, padding=self.span // 2, dilation=self.dilation)


class Block(nn.Module):
    def __init__(self, cfg, dilation):
        super().__init__()
        c, causal = cfg["width"], cfg["direction"] == "causal"
        self.norm1 = MaskedNorm(c, cfg["norm"], cfg["norm_groups"])
        self.conv1 = DilatedConv(c, c, cfg["kernel"], dilation, causal)
        self.norm2 = MaskedNorm(c, cfg["norm"], cfg["norm_groups"])
        self.conv2 = DilatedConv(c, c, cfg["kernel"], dilation, causal)
        self.dropout = cfg.get("dropout", 0.0)

    def forward(self, x, mask):
        act = lambda h: F.dropout(F.gelu(h), self.dropout, self.training) if self.dropout > 0 else F.gelu(h)
        h = self.conv1(act(self.norm1(x, mask)))
        h = self.conv2(act(self.norm2(h, mask)))
        return (x + h) * mask


class InputEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.kind = cfg["input"]
        if self.kind == "embedding":
            self.embedding = nn.Embedding(NUM_TOKENS, cfg["width"])
        else:
            self.conv = DilatedConv(1, cfg["width"], cfg["kernel"], 1, cfg["direction"] == "causal")
            self.mask_vector = nn.Parameter(torch.randn(cfg["width"]))

    def forward(self, tokens, mask):
        if self.kind == "embedding":
            return self.embedding(tokens).permute(0, 2, 1) * mask
        is_value = (tokens < NUM_VALUES).unsqueeze(1).float()
        is_mask = (tokens == MASK_TOKEN).unsqueeze(1).float()
        value = tokens.unsqueeze(1).float() * is_value / (NUM_VALUES - 1)
        x = self.conv(value * mask)
        return (x + self.mask_vector.view(-1, 1) * is_mask) * mask


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input = InputEncoder(cfg)
        cycle = cfg["dilation_cycle"]
        for b in range(cfg["depth"]):
            d = cfg["dilation_base"] ** (b if cycle == 0 else b % cycle)
            self.add_module(f"block{b}", Block(cfg, d))
        self.depth = cfg["depth"]
        self.final_norm = MaskedNorm(cfg["width"], cfg["norm"], cfg["norm_groups"])

    def forward(self, tokens, lengths):  # tokens [N, L] int64, lengths [N]
        mask = (torch.arange(tokens.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(1).float()
        x = self.input(tokens, mask)
        for b in range(self.depth):
            x = getattr(self, f"block{b}")(x, mask)
        return self.final_norm(x, mask)  # [N, C, L]


class PretrainModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.token_head = nn.Linear(cfg["width"], NUM_VALUES)

    def forward(self, tokens, lengths):  # -> [N, 41, L]
        f = self.encoder(tokens, lengths).permute(0, 2, 1)
        return self.token_head(f).permute(0, 2, 1)

    def loss_sum(self, tokens, lengths, targets, loss_mask):
        """Summed cross-entropy on loss positions, and their count."""
        f = self.encoder(tokens, lengths).permute(0, 2, 1).reshape(-1, self.token_head.in_features)
        pos = loss_mask.reshape(-1).nonzero().squeeze(1)
        logits = self.token_head(f.index_select(0, pos))
        return F.cross_entropy(logits, targets.reshape(-1).index_select(0, pos).long(), reduction="sum"), len(pos)


class Classifier(nn.Module):
    """Encoder, mean and max over each row's real positions and the log of
    its length, linear head."""

    def __init__(self, cfg, num_classes):
        super().__init__()
        self.encoder = Encoder(cfg)
        d = 2 * cfg["width"] + 1
        self.classifier_head = nn.Linear(d, num_classes)
        # Fixed standardisation of the head's input (set by the fine-tune:
        # every feature for the linear probe, the log length otherwise).
        self.classifier_head.register_buffer("feature_shift", torch.zeros(d))
        self.classifier_head.register_buffer("feature_scale", torch.ones(d))
        # Batch normalisation without affine parameters (running statistics).
        self.classifier_head.register_buffer("norm_mean", torch.zeros(d))
        self.classifier_head.register_buffer("norm_var", torch.ones(d))
        self.dropout = cfg.get("dropout", 0.0)

    def pooled(self, tokens, lengths):  # -> [N, 2C + 1]: mean, max, log length
        f = self.encoder(tokens, lengths)  # [N, C, L], zero at padding
        n = lengths.to(f.dtype).unsqueeze(1)
        mean = f.sum(2) / n
        real = torch.arange(f.shape[2]).unsqueeze(0) < lengths.unsqueeze(1)  # [N, L]
        mx = f.masked_fill(~real.unsqueeze(1), float("-inf")).amax(2)
        pooled = torch.cat([mean, mx], 1)
        if self.dropout > 0:
            pooled = F.dropout(pooled, self.dropout, self.training)
        return torch.cat([pooled, n.clamp_min(1).log()], 1)

    def forward(self, tokens, lengths):  # -> [N, K]
        h = self.classifier_head
        z = (self.pooled(tokens, lengths) - h.feature_shift) / h.feature_scale
        z = F.batch_norm(z, h.norm_mean, h.norm_var, training=False, eps=1e-5)
        return h(z)


def load(path, config=None):
    """The model in `path` (an export or a checkpoint directory), in eval
    mode: a Classifier when the weights hold a classifier head, else a
    PretrainModel."""
    doc = {}
    if config is None:
        for name in ("config.json", "state.json"):
            p = os.path.join(path, name)
            if os.path.exists(p):
                with open(p) as f:
                    doc = json.load(f)
                config = doc.get("model", doc)
                break
    state = read_safetensors(os.path.join(path, "model.safetensors"))
    if "classifier_head.weight" in state:
        model = Classifier(config, state["classifier_head.weight"].shape[0])
    else:
        model = PretrainModel(config)
        state = {k: v for k, v in state.items() if not k.startswith("classifier_head")}
    if doc.get("kind") not in (None, "classifier" if isinstance(model, Classifier) else "pretrain"):
        raise ValueError(f"{path}: config.json says {doc['kind']!r}, the weights say otherwise")
    model.load_state_dict(state, strict=True)
    return model.eval()
