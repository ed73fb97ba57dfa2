"""Equivalence tests on small random Conformers: streaming == chunk-masked full forward,
batched streams == streams alone, stack/unstack round trips."""

import pytest
import torch

from asr.config import ConfigError, ModelConfig
from asr.model.conformer import CTCModel, PositionTable, TracedBlocks, chunk_mask, chunk_window
from asr.model.layers import Dropout
from asr.model.state import EncoderState

from .conftest import random_model

TOL = 1e-4


def stream_logprobs(
    model: CTCModel, feats: torch.Tensor, chunk: int, left: int, positions: PositionTable | None = None
) -> torch.Tensor:
    """Chunk-by-chunk streaming of one utterance (batch 1), WeNet's windowing."""
    window, stride = chunk_window(model.cfg, chunk)
    cache = -1 if left < 0 else chunk * left
    state = model.initial_state(1)
    outs = []
    for start in range(0, feats.size(0) - model.cfg.right_context, stride):
        x = feats[start : start + window]
        lp, lens, state = model.forward_chunk(x[None], torch.tensor([x.size(0)]), state, cache, positions)
        outs.append(lp[0, : int(lens[0])])
    return torch.cat(outs)


def feats_for(seed: int, frames: int, dim: int = 80) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 10 + 3 * torch.randn(frames, dim, generator=g)


@pytest.mark.parametrize("chunk,left", [(1, -1), (4, -1), (4, 2), (16, -1), (16, 1), (5, 0)])
@pytest.mark.parametrize("norm", ["layer_norm", "batch_norm"])
def test_streaming_equals_chunk_masked_forward(chunk, left, norm):
    model = random_model(cnn_module_norm=norm)
    feats = feats_for(chunk * 10 + left, 203)
    with torch.no_grad():
        masked, lens = model(feats[None], torch.tensor([feats.size(0)]), chunk, left)
        streamed = stream_logprobs(model, feats, chunk, left)
    assert streamed.shape == masked[0].shape == (int(lens[0]), model.cfg.vocab_size)
    assert (streamed - masked[0]).abs().max() <= TOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_position_table_gives_the_same_numbers_and_falls_back_past_its_end(dtype):
    model = random_model()
    feats = feats_for(4, 203)  # 49 encoder frames: past the table's 32
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        table = PositionTable(model.encoder, 32)
        gathers = []
        gather = table.gather
        table.gather = lambda *args: gathers.append(args[0]) or gather(*args)  # counts its use
        projected = stream_logprobs(model, feats, 4, 2)
        gathered = stream_logprobs(model, feats, 4, 2, table)
    assert torch.equal(projected, gathered)
    steps = projected.size(0) // 4 + (projected.size(0) % 4 > 0)
    assert 0 < len(gathers) < steps * model.cfg.num_blocks  # used while it covers, then not


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_traced_blocks_give_the_eager_numbers_in_every_variant(dtype):
    """Streams joining at different times, partial last chunks, limited history: the
    steps go through every variant of the traced blocks, bit for bit."""
    model = random_model(num_blocks=3)
    window, stride = chunk_window(model.cfg, 4)
    utts = [feats_for(20 + i, n) for i, n in enumerate([150, 61, 97])]
    blocks = TracedBlocks(model.encoder)
    outs = {}
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        for use in (None, blocks):
            pos = [0] * len(utts)
            states = [model.initial_state(1) for _ in utts]
            got = []
            for step in range(30):
                active = [i for i, u in enumerate(utts) if step >= i and pos[i] < u.size(0) - model.cfg.right_context]
                if not active:
                    continue
                chunks = [utts[i][pos[i] : pos[i] + window] for i in active]
                xs = torch.nn.utils.rnn.pad_sequence(chunks, batch_first=True)
                st = EncoderState.stack([states[i] for i in active])
                lp, olens, new = model.forward_chunk(xs, torch.tensor([c.size(0) for c in chunks]), st, 8, blocks=use)
                for k, (i, s) in enumerate(zip(active, new.unstack())):
                    states[i] = s
                    got.append(lp[k, : int(olens[k])])
                    pos[i] += stride
            outs[use is None] = torch.cat(got)
    assert torch.equal(outs[True], outs[False])
    assert len(blocks._traces) >= 3  # fresh, partial and steady steps each had their own trace


@pytest.mark.parametrize("input_layer", ["conv2d6", "conv2d8"])
def test_other_subsampling_rates_stream_exactly(input_layer):
    model = random_model(input_layer=input_layer)
    feats = feats_for(3, 260)
    with torch.no_grad():
        masked, _ = model(feats[None], torch.tensor([260]), 4, -1)
        streamed = stream_logprobs(model, feats, 4, -1)
    assert (streamed - masked[0]).abs().max() <= TOL


def test_full_context_differs_from_chunked():
    """Guards against a chunk mask that silently does nothing."""
    model = random_model()
    feats = feats_for(1, 150)
    with torch.no_grad():
        full, _ = model(feats[None], torch.tensor([150]))
        chunked, _ = model(feats[None], torch.tensor([150]), 2, -1)
    assert (full - chunked).abs().max() > 1e-2


def test_padding_does_not_change_results():
    model = random_model()
    a, b = feats_for(1, 120), feats_for(2, 77)
    xs = torch.nn.utils.rnn.pad_sequence([a, b], batch_first=True)
    with torch.no_grad():
        batch, lens = model(xs, torch.tensor([120, 77]), 4, -1)
        alone, _ = model(b[None], torch.tensor([77]), 4, -1)
    assert (batch[1, : int(lens[1])] - alone[0]).abs().max() <= TOL


@pytest.mark.parametrize("left", [-1, 2])
@pytest.mark.parametrize("traced", [False, True])
def test_batched_streams_at_different_offsets_equal_streams_alone(left, traced):
    """Streams start at different times and get chunks of different lengths; each step runs
    every active stream in one batch. Results must equal each stream run on its own."""
    model = random_model(num_blocks=3)
    chunk = 4
    cache = -1 if left < 0 else chunk * left
    window, stride = chunk_window(model.cfg, chunk)
    utts = [feats_for(10 + i, n) for i, n in enumerate([180, 95, 140, 33])]
    starts = [0, 2, 3, 5]  # step at which each stream joins
    blocks = TracedBlocks(model.encoder) if traced else None
    with torch.no_grad():
        expected = [stream_logprobs(model, u, chunk, left) for u in utts]
        pos = [0] * len(utts)
        states = [model.initial_state(1) for _ in utts]
        outs: list[list[torch.Tensor]] = [[] for _ in utts]
        for step in range(40):
            active = [i for i, u in enumerate(utts)
                      if step >= starts[i] and pos[i] < u.size(0) - model.cfg.right_context]
            # let stream 2 sit out some steps so offsets drift apart
            active = [i for i in active if not (i == 2 and step % 3 == 0)]
            if not active:
                continue
            chunks = [utts[i][pos[i] : pos[i] + window] for i in active]
            xs = torch.nn.utils.rnn.pad_sequence(chunks, batch_first=True)
            lens = torch.tensor([c.size(0) for c in chunks])
            st = EncoderState.stack([states[i] for i in active])
            lp, olens, new = model.forward_chunk(xs, lens, st, cache, blocks=blocks)
            for k, (i, s) in enumerate(zip(active, new.unstack())):
                states[i] = s
                outs[i].append(lp[k, : int(olens[k])])
                pos[i] += stride
    for i in range(len(utts)):
        got = torch.cat(outs[i])
        assert got.shape == expected[i].shape
        assert (got - expected[i]).abs().max() <= TOL


def test_stack_unstack_round_trip():
    model = random_model()
    with torch.no_grad():
        states = []
        for i, n in enumerate([19, 35, 51]):
            s = model.initial_state(1)
            f = feats_for(i, n)
            _, _, s = model.forward_chunk(f[None], torch.tensor([n]), s, -1)
            states.append(s)
    stacked = EncoderState.stack(states)
    assert stacked.batch_size == 3
    assert stacked.att_cache.size(3) == max(int(s.att_len) for s in states)
    for a, b in zip(states, stacked.unstack()):
        for x, y in zip((a.att_cache, a.att_len, a.cnn_cache, a.offset), (b.att_cache, b.att_len, b.cnn_cache, b.offset)):
            assert torch.equal(x, y)
    restacked = EncoderState.stack(stacked.unstack())
    assert torch.equal(restacked.att_cache, stacked.att_cache)


def test_cache_is_trimmed_to_left_chunks():
    model = random_model()
    s = model.initial_state(1)
    with torch.no_grad():
        for i in range(5):
            f = feats_for(i, 19)
            _, _, s = model.forward_chunk(f[None], torch.tensor([19]), s, 8)
    assert int(s.att_len) == 8 and s.att_cache.size(3) == 8
    assert int(s.offset) == 20


def test_chunk_mask_shape_and_left_limit():
    m = chunk_mask(8, 2, 1)
    assert m[5].tolist() == [False, False, True, True, True, True, False, False]
    assert chunk_mask(4, 2, -1)[0].tolist() == [True, True, False, False]


def test_dynamic_chunk_training_step_updates_weights():
    model = random_model()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    feats = torch.stack([feats_for(1, 100), feats_for(2, 100)])
    before = model.ctc.ctc_lo.weight.detach().clone()
    for chunk in (-1, 3):
        logp, lens = model(feats, torch.tensor([100, 80]), chunk, -1)
        loss = torch.nn.functional.ctc_loss(logp.transpose(0, 1), torch.tensor([[3, 4, 5], [6, 7, 0]]),
                                            lens, torch.tensor([3, 2]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert not torch.equal(before, model.ctc.ctc_lo.weight)


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="input_layer"):
        ModelConfig(vocab_size=10, input_layer="conv1d")
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(vocab_size=10, output_size=30, attention_heads=4)


def test_pool_dropout_drops_at_rate_keeps_expectation_and_varies():
    drop = Dropout(0.1).train()
    Dropout._pools.clear()  # as in a fresh process
    torch.manual_seed(3)
    x = torch.ones(300, 700)
    a, b = drop(x), drop(x)
    for y in (a, b):
        assert abs((y == 0).float().mean().item() - 0.1) < 0.005
        assert abs(y.mean().item() - 1.0) < 0.01
    assert (a != b).float().mean().item() > 0.1  # each call draws its own window of the pool
    Dropout._pools.clear()
    torch.manual_seed(3)
    assert torch.equal(drop(x), a)  # offsets come from torch's generator: reproducible
    assert drop(torch.ones(3, 4, dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert torch.equal(drop.eval()(x), x)
    x.requires_grad_(True)
    y = drop.train()(x)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # gradient flows through the kept entries, scaled
