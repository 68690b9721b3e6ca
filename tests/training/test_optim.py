import pytest
import torch

from training.optim import OptimConfig, build_optimizer, build_scheduler, clip_gradients, lr_factor, param_groups


def test_no_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 4))
    decay, no_decay = param_groups(model, 1e-5)
    assert decay["weight_decay"] == 1e-5 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2} and len(decay["params"]) == 2  # embedding + linear weight
    assert {p.ndim for p in no_decay["params"]} == {1} and len(no_decay["params"]) == 3  # ln w, ln b, bias


def test_linear_warmup_then_decay():
    cfg = OptimConfig(lr=1.0, warmup_ratio=0.1)
    factors = [lr_factor(s, 100, cfg) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[55] == pytest.approx(0.5)
    assert factors[99] == pytest.approx(1 / 90)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))


def test_adamw_is_decoupled_with_table8_numbers():
    cfg = OptimConfig(lr=0.1, weight_decay=0.5, warmup_ratio=0.0)
    w = torch.nn.Parameter(torch.tensor([[2.0]]))
    model = torch.nn.Module()
    model.w = w
    opt = build_optimizer(model, cfg)
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6
    w.grad = torch.zeros_like(w)  # zero gradient: only the decoupled decay moves the weight
    opt.step()
    assert w.item() == pytest.approx(2.0 * (1 - 0.1 * 0.5))


def test_clip_zero_means_no_clipping():
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.full((4,), 3.0)
    assert clip_gradients([p], 0.0) == pytest.approx(6.0)
    assert torch.equal(p.grad, torch.full((4,), 3.0))
    assert clip_gradients([p], 1.0) == pytest.approx(6.0)
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-4)


def test_scheduler_steps():
    model = torch.nn.Linear(2, 2)
    cfg = OptimConfig(lr=1e-3, warmup_ratio=0.5)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3, 5e-4])


def test_head_lr_puts_the_parameters_outside_the_base_encoder_in_their_own_groups():
    class Classifier(torch.nn.Module):
        base_model_prefix = "encoder"

        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4))
            self.classifier = torch.nn.Linear(4, 1)

    model = Classifier()
    assert len(param_groups(model, 0.01)) == 2  # no head_lr: one lr for all
    cfg = OptimConfig(lr=1e-4, head_lr=1e-3, weight_decay=0.01, warmup_ratio=0.5)
    opt = build_optimizer(model, cfg)
    body_decay, body_plain, head_decay, head_plain = opt.param_groups
    assert [p is q for p, q in zip(head_decay["params"] + head_plain["params"],
                                   [model.classifier.weight, model.classifier.bias])] == [True, True]
    assert body_decay["params"] == [model.encoder[0].weight] and len(body_plain["params"]) == 2
    assert (head_decay["weight_decay"], head_plain["weight_decay"]) == (0.01, 0.0)
    sched = build_scheduler(opt, cfg, 4)  # warm-up over 2 steps scales both peaks alike
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-5, 5e-5, 5e-4, 5e-4])
    opt.step(), sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-4, 1e-3, 1e-3])
    with pytest.raises(ValueError, match="head_lr"):
        OptimConfig(head_lr=0.0).validate()


def test_cpu_optimizer_is_fused_and_steps_as_the_reference_adamw():
    """On CPU the fused kernel (torch's default there is the per-tensor Python loop); the same
    trajectory as the reference single-tensor AdamW with decay and head groups."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))
    reference = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))
    reference.load_state_dict(model.state_dict())
    cfg = OptimConfig(lr=1e-2, weight_decay=0.1, warmup_ratio=0.0)
    opt = build_optimizer(model, cfg)
    assert opt.defaults["fused"] is True
    ref = torch.optim.AdamW(param_groups(reference, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                            eps=cfg.eps, foreach=False)
    x = torch.randn(16, 8)
    for _ in range(5):
        for m, o in ((model, opt), (reference, ref)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
