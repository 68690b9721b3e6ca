"""`mgte train cpt`: the cached step on the real encoder, two DDP workers, reversed NTK, a tiny
end-to-end run (raw pairs in, HF + sentence-transformers model out), NaN skip, resume."""

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from foundation.config import load_config
from model import MGTEConfig, MGTEModel, load_pretrained, save_pretrained
from model.unpad import pack_sequences
from foundation import faults
from training import cpt
from training.contrastive import in_batch_loss
from training.gradcache import cached_step, full_batch_step
from training.distributed import World
from training.loop import Preempted, train_loop
from training.steppers import StepContext, TorchStepper
from training.metrics import read_metrics

REPO = Path(__file__).resolve().parents[3]


def xlmr_tokenizer() -> str:
    from model.tokenizer import bundled_xlmr_tokenizer_json

    return str(bundled_xlmr_tokenizer_json())


TOPICS = ["rivers", "volcanoes", "bread", "chess", "bicycles", "orchids", "glaciers", "violins", "comets", "bees",
          "tea", "lighthouses"]


def write_pairs(directory: Path) -> Path:
    """Two sources of real-looking pairs; `document` (not `positive`) in one, a duplicate, an empty one."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "title_body.jsonl", "w") as fh:
        for t in TOPICS:
            fh.write(json.dumps({"query": f"All about {t}", "positive": f"This article explains {t}: their history, "
                                 f"how {t} work and why people care about {t}.", "lang": "en"}) + "\n")
        fh.write(json.dumps({"query": "All about tea", "positive": "This article explains tea: their history, how tea "
                             "work and why people care about tea.", "lang": "en"}) + "\n")  # exact duplicate
        fh.write(json.dumps({"query": "Nothing", "positive": ""}) + "\n")  # empty
    with open(directory / "qa.jsonl", "w") as fh:
        for t in TOPICS:
            fh.write(json.dumps({"query": f"What should I know about {t}?", "document": f"Most people know little "
                                 f"about {t}; start with the basics of {t}.", "source": "qa"}) + "\n")
        fh.write("{not json\n")
    return directory


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory):
    """A tiny encoder with the real vocabulary, saved like an MLM-8192 model (RoPE base 160,000)."""
    path = tmp_path_factory.mktemp("init") / "model"
    torch.manual_seed(0)
    save_pretrained(MGTEModel(MGTEConfig.tiny(rope_theta=160_000.0)), path)
    return path


def tiny_cfg(tmp_path, inputs, *sets, init=None):
    return load_config(cpt.Config, REPO / "dags/configs/cpt/tiny.yaml", [
        "input=" + json.dumps([str(p) for p in inputs]), f"output={tmp_path / 'out'}", "engine=local",
        f"tokenizer={xlmr_tokenizer()}", f"init={init if init else 'null'}",
        "data.batch_size=8", "data.chunk_size=3", "data.query_max_tokens=16", "data.doc_max_tokens=32",
        "loop.max_steps=4", "loop.ckpt_every=2", "loop.log_every=1", "loop.progress=false",
        "loop.tensorboard=false", "loop.optim.lr=1.0e-3", *sets])


# -- the cached step on the real encoder -----------------------------------------------------


def test_cached_step_on_the_encoder_equals_the_full_batch_gradient():
    torch.manual_seed(0)
    model = MGTEModel(MGTEConfig.tiny(vocab_size=1000, hidden_dropout_prob=0.1)).train()
    g = torch.Generator().manual_seed(1)
    docs = [torch.randint(4, 1000, (int(n),), generator=g).tolist() for n in torch.randint(3, 20, (10,), generator=g)]
    queries = [d[:4] for d in docs]
    qh, dh = torch.arange(10), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 1, 9])  # pair 8 repeats pair 1's text

    def chunks(seqs, size):
        return [pack_sequences(seqs[i:i + size]) for i in range(0, len(seqs), size)]

    def encode(chunk):
        ids, cu, longest = chunk
        return model(ids, cu_seqlens=cu, max_seqlen=longest).index_select(0, cu[:-1].long())

    def loss_fn(q, d):
        return in_batch_loss(q, d, 0.05, query_hash=qh, doc_hash=dh)

    grads = []
    for step in (full_batch_step, lambda *a: cached_step(*a, device="cpu")):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        loss = step(encode, chunks(queries, 4), chunks(docs, 3), loss_fn)
        grads.append((loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (ref_loss, ref), (loss, got) = grads
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    assert ref.keys() == got.keys() and len(ref) > 10
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6, msg=name)


# -- two gloo workers with DDP = one worker with the whole batch ------------------------------


def _grads_of_one_step(cfg, tables, world: World):
    task = cpt.CPTTask(cfg, tables)
    torch.manual_seed(0)
    model = task.build_model()
    stepper = TorchStepper(model, cfg.loop, torch.device("cpu"), "fp32")
    stepper.wrap()
    data = task.build_data(world.rank, world.world_size)
    ctx = StepContext(stepper, torch.device("cpu"), "fp32", world)
    loss_sum, units, sums, _ = task.train_step(ctx, stepper.model, next(data))
    return loss_sum, units, sums, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank, init_file, cfg, tables, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        out[rank] = _grads_of_one_step(cfg, tables, World(rank, 2, rank))
    finally:
        dist.destroy_process_group()


def test_two_ddp_workers_give_the_gradient_of_one_worker(tmp_path):
    path = tmp_path / "init"
    torch.manual_seed(0)
    save_pretrained(MGTEModel(MGTEConfig.tiny(rope_theta=160_000.0, hidden_dropout_prob=0.0)), path)
    cfg = tiny_cfg(tmp_path, [write_pairs(tmp_path / "pairs")], init=path)
    tables, _ = cpt.load_pairs(cfg.input)
    loss_sum, units, sums, ref = _grads_of_one_step(cfg, tables, World())
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(str(tmp_path / "pg"), cfg, tables, out), nprocs=2, join=True)
    assert out[0][1] + out[1][1] == units == 8
    assert (out[0][0] + out[1][0]) / units == pytest.approx(loss_sum / units, rel=1e-5)
    assert out[0][2]["accuracy"] + out[1][2]["accuracy"] == sums["accuracy"]
    for name in ref:
        for rank in range(2):  # DDP leaves the averaged gradient on every rank
            torch.testing.assert_close(out[rank][3][name], ref[name], rtol=1e-4, atol=1e-6, msg=name)


# -- reversed NTK ------------------------------------------------------------------------------


def test_reversed_ntk_trains_at_one_eighth_and_saves_the_original_base(tmp_path, init_dir):
    cfg = tiny_cfg(tmp_path, [write_pairs(tmp_path / "pairs")], init=init_dir)
    task = cpt.CPTTask(cfg)
    model = task.build_model()
    assert model.rotary.theta_override == 20_000.0 and model.config.rope_theta == 160_000.0
    ids, cu, longest = pack_sequences([list(range(5, 60))])
    model.eval()
    with torch.no_grad():  # what training sees: RoPE base 20,000 (dropout off to compare)
        trained_view = model(ids, cu_seqlens=cu, max_seqlen=longest)
    task.save_model(model, tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["rope_theta"] == 160_000.0 and not saved.get("rope_scaling")
    reloaded = load_pretrained(tmp_path / "saved", cls=MGTEModel).eval()
    with torch.no_grad():
        # the saved model runs at the original base, so it differs from the training view ...
        assert not torch.allclose(reloaded(ids, cu_seqlens=cu, max_seqlen=longest), trained_view, atol=1e-5)
        # ... and the same weights at 20,000 give exactly what training saw
        with reloaded.rope_theta_override(20_000.0):
            torch.testing.assert_close(reloaded(ids, cu_seqlens=cu, max_seqlen=longest), trained_view)


# -- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, init_dir):
    tmp = tmp_path_factory.mktemp("cpt")
    cfg = tiny_cfg(tmp, [write_pairs(tmp / "pairs")], init=init_dir)
    os.environ["HF_HUB_OFFLINE"] = "1"
    return tmp, cfg, cpt.run(cfg)


def test_tiny_run_writes_model_checkpoints_and_an_accounted_manifest(finished_run):
    tmp, cfg, manifest = finished_run
    out = tmp / "out"
    assert manifest["counts"] == {"input": 27, "kept": 24, "dropped": 2, "quarantined": 1}
    assert manifest["dropped_by_reason"] == {"empty_positive": 1, "exact_duplicate": 1}
    assert manifest["extra"]["sources"] == {"qa": 12, "title_body": 12}
    assert manifest["extra"]["final"]["step"] == 4
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4"]
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 5))
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["units"] == 8 for r in rows)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "modules.json", "1_Pooling/config.json"):
        assert (out / "model" / name).is_file(), name
    assert cpt.run(cfg) == manifest  # a rerun of a finished run is a no-op


def test_saved_model_loads_with_sentence_transformers_and_pools_cls(finished_run):
    from sentence_transformers import SentenceTransformer

    out = finished_run[0] / "out" / "model"
    st = SentenceTransformer(str(out), device="cpu", trust_remote_code=True, local_files_only=True)
    texts = ["All about bees", "What should I know about comets?"]
    ours = load_pretrained(out, cls=MGTEModel).eval()
    ids = ours.tokenizer(texts)["input_ids"]
    packed, cu, longest = pack_sequences(ids)
    with torch.no_grad():
        cls = ours(packed, cu_seqlens=cu, max_seqlen=longest).index_select(0, cu[:-1].long())
    torch.testing.assert_close(torch.as_tensor(st.encode(texts)), cls, rtol=1e-4, atol=1e-5)


def test_resume_after_sigterm_reproduces_the_losses(finished_run, tmp_path, monkeypatch, init_dir, no_ray):
    ref_dir, ref_cfg, _ = finished_run
    cfg = tiny_cfg(tmp_path, ref_cfg.input, init=init_dir)
    monkeypatch.setenv(faults.ENV, "point=train_step,count=3,action=sigterm")
    with pytest.raises(Preempted):
        cpt.run(cfg)
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    monkeypatch.delenv(faults.ENV)
    manifest = cpt.run(cfg)
    assert manifest["extra"]["final"]["resumed_from"] == 3
    losses = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl")}
    ref = {r["step"]: r["loss"] for r in read_metrics(ref_dir / "out" / "metrics.jsonl")}
    assert losses == ref


def test_nan_batch_is_skipped_and_counted(tmp_path, monkeypatch, init_dir):
    monkeypatch.setenv(faults.ENV, "point=train_step,count=2,action=nan")
    cfg = tiny_cfg(tmp_path, [write_pairs(tmp_path / "pairs")], "loop.max_steps=3", init=init_dir)
    result = train_loop(cpt.CPTTask(cfg), cfg.loop, ckpt_dir=tmp_path / "c", output_dir=tmp_path / "o")
    assert result.nonfinite_steps == 1 and result.step == 3
    rows = read_metrics(tmp_path / "o" / "metrics.jsonl")
    assert rows[1]["loss"] == "nan" and rows[1]["nonfinite_skipped"] == 1 and rows[2]["loss"] != "nan"


# -- inputs ------------------------------------------------------------------------------------


def test_pairs_output_or_raw_files_but_not_both(tmp_path):
    from pipelines import pairs

    raw = write_pairs(tmp_path / "pairs")
    pcfg = load_config(pairs.Config, REPO / "dags/configs/pairs/tiny.yaml",
                       [f"tokenizer={xlmr_tokenizer()}", "reader.error_budget=0.2", f"input=[{raw}]",
                        f"output={tmp_path / 'shards'}"])
    pairs.run(pcfg)
    from_stage, info = cpt.load_pairs((str(tmp_path / "shards"),))
    from_raw, raw_info = cpt.load_pairs((str(raw),))
    assert {s: t.num_rows for s, t in from_stage.items()} == {s: t.num_rows for s, t in from_raw.items()}
    assert info["counts"] == raw_info["counts"]
    with pytest.raises(cpt.MgteError, match="mixes"):
        cpt.load_pairs((str(tmp_path / "shards"), str(raw / "qa.jsonl")))


def test_duplicate_texts_share_hashes_in_a_batch(tmp_path):
    directory = tmp_path / "dups"
    directory.mkdir()
    rows = [{"query": f"q{i}", "positive": "the same answer" if i % 2 else f"answer {i}"} for i in range(8)]
    (directory / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tables, _ = cpt.load_pairs((str(directory),))
    cfg = tiny_cfg(tmp_path, [directory])
    from model.tokenizer import load_tokenizer

    batch = next(cpt.PairBatches(tables, load_tokenizer(xlmr_tokenizer()), cfg.data, 0, 1))[0]
    dh = batch["doc_hash"].tolist()
    assert len(dh) == 8 and len(set(dh)) == 5  # four copies of one text share one hash


@pytest.mark.slow
def test_ray_train_worker_runs_the_same_task(tmp_path, init_dir, local_ray):
    """The tiny config's engine: one Ray Train worker (gloo) on a local Ray."""
    cfg = tiny_cfg(tmp_path, [write_pairs(tmp_path / "pairs")], "engine=ray", "loop.max_steps=2",
                   "loop.ckpt_every=1", init=init_dir)
    manifest = cpt.run(cfg)
    assert manifest["extra"]["final"]["step"] == 2
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    assert [r["step"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl")] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == ["step-1", "step-2"]
    ray_files = [p for p in (tmp_path / "out" / "ray").rglob("*") if p.is_file()]
    assert ray_files and not [p for p in ray_files if p.suffix in (".pt", ".safetensors", ".bin")]  # one copy (rule 5)
