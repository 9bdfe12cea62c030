"""Remedies come from every finding, ranked by cause, each with the settings that apply it."""

from __future__ import annotations

from gancore.diagnostics.remedies import BALANCE, NON_SATURATING, SEPARATE, plan
from gancore.diagnostics.verdict import decide

COLLAPSED = {"modes_total": 8, "modes_covered": 1, "modes_expected": 8.0, "modes_expected_sd": 0.0, "high_quality_fraction": 0.99}
# ring8 collapsed to one mode: a speck of the ring (pairwise distances 0.02 of the data's)
ONE_SPECK = {**COLLAPSED, "pairwise_distance_ratio": 0.02}
SINGLE = {"pack": 1, "steps": 5000, "lr_g": 1e-4, "lr_d": 2e-3, "n_critic": 5, "monitor_every": 500, "mixture": False, "kind": "vector"}


def _dynamics(vanishing: bool, dominance: bool) -> dict:
    return {
        "vanishing_gradients": {
            "flag": vanishing,
            "d_fake_late": 0.01,
            "grad_ratio": 0.01,
            "ratio_threshold": 0.1,
            "grad_norm_g_late_median": 1e-4,
            "grad_norm_g_reference_median": 1e-2,
        },
        "dominance": {"flag": dominance},
    }


def test_a_saturating_loss_that_stalled_is_cured_first():
    """The issue's case: minimax with a dominant D collapses completely, with vanishing gradients
    beside it. The verdict stays the worst symptom; the first remedy is the cause's."""
    out = decide(ONE_SPECK, _dynamics(vanishing=True, dominance=True), "minimax", SINGLE)
    assert out["verdict"] == "complete_collapse"
    names = [r["name"] for r in out["remedy_settings"]]
    assert names[:3] == ["non_saturating", "wasserstein_gp", "balance"]
    assert out["remedy_settings"][0]["sets"] == ["loss.name=non_saturating"]
    assert out["remedies"][0].startswith(NON_SATURATING) and "cause: the saturating minimax loss" in out["remedies"][0]
    assert out["remedy_settings"][2]["sets"] == ["train.lr_d=0.0001", "train.n_critic=1"]
    assert out["remedies"][2].startswith(BALANCE)
    # ... then the symptom's remedies, then the other findings' (vanishing gradients: normalisation), each once.
    assert names[3:] == ["mixture", "pack2", "pack4", "augment", "normalisation"] and len(set(names)) == len(names)


def test_the_non_saturating_loss_is_not_proposed_to_a_run_that_uses_it():
    out = decide(ONE_SPECK, _dynamics(vanishing=True, dominance=False), "non_saturating", SINGLE)
    names = [r["name"] for r in out["remedy_settings"]]
    assert "non_saturating" not in names and names[0] == "mixture"
    assert out["remedies"][0].startswith(SEPARATE)


def test_copies_of_the_training_data_call_for_an_earlier_stop_and_more_data():
    figures = {**COLLAPSED, "modes_covered": 8, "copy_c_t": -8.0, "copy_rate": 0.4, "copy_quantile": 0.05, "n_samples": 2500}
    out = decide(figures, None, "non_saturating", {**SINGLE, "kind": "image", "modes_total": 10})
    assert out["verdict"] == "data_copying"
    assert [r["name"] for r in out["remedy_settings"]] == ["augment", "earlier"]
    assert out["remedy_settings"][0]["sets"] == [  # images: the kind's transforms
        "augment.policy=color,translation,cutout",
        "augment.adaptive=true",
    ]  # no memorisation found: ADA's r_t steers (held-out examples would keep p near 0)
    assert "ADA's adaptive probability" in out["remedies"][0] and "held-out" not in out["remedies"][0]
    assert out["remedy_settings"][1]["sets"] == ["train.keep_best=high_quality_fraction", "sample.generator=best"]


def test_a_one_part_mixture_of_images_is_split_by_clusters():
    out = plan(["partial_collapse"], "non_saturating", None, {**SINGLE, "mixture": True, "mixture_parts": 1})
    assert out[0].name == "mixture" and out[0].sets == ("mixture.partition=kmeans",)
    # Data found to be one cluster would be found so again: splitting them by clusters changes nothing.
    found_one = {**SINGLE, "mixture": True, "mixture_parts": 1, "partition_method": "kmeans"}
    assert "mixture" not in [r.name for r in plan(["intra_mode_collapse"], "non_saturating", None, found_one)]
    # A run that is already a mixture of several parts gets no mixture remedy.
    assert "mixture" not in [
        r.name for r in plan(["partial_collapse"], "non_saturating", None, {**SINGLE, "mixture": True, "mixture_parts": 8})
    ]


def test_healthy_runs_get_no_remedy():
    assert plan(["healthy"], "minimax", _dynamics(vanishing=True, dominance=True), SINGLE) == []


def test_a_memorising_discriminator_is_cured_by_augmentation_and_a_run_that_augments_is_told_so():
    overfit = {
        "discriminator_overfitting": {
            "flag": True,
            "called_real_train": 0.95,
            "called_real_heldout": 0.6,
            "gap": 0.35,
            "z": 12.0,
            "r_t_train": 0.9,
        }
    }
    healthy = {**COLLAPSED, "modes_covered": 8}
    out = decide(healthy, overfit, "non_saturating", SINGLE)
    assert out["verdict"] == "discriminator_overfitting" and "95.0% of training examples" in out["explanation"]
    # ADA's r_t first: from 10,000 steps on (MNIST) and 20,000 (Fashion-MNIST) it gained more than
    # held-out steering in benchmarks/data_limited.py; its caveat says what it cost on short runs.
    assert out["remedy_settings"][0] == {
        "name": "augment",
        "sets": ["augment.policy=jitter", "augment.adaptive=true"],
        "cause": None,
        "caveat": "ADA's r_t also rises for a D that merely wins: in benchmarks/data_limited.py, on 10 % of the data, at "
        "ADA's pace (augment.kimg=500, the default) it cost 3 % (MNIST) and 0 % (Fashion-MNIST) FID at 1,000 steps, at "
        "augment.kimg=100 5 % and 14 %, where held-out steering cost nothing; by 20,000 steps both paces gained as much "
        "(one install, 3 seeds)",
    }
    assert "ADA's adaptive probability" in out["remedies"][0]
    # The signal that found this D beside it, with what was measured of it: gan-remedy measures both.
    held_out = out["remedy_settings"][1]
    assert held_out["name"] == "augment_held_out"
    assert held_out["sets"] == ["augment.policy=jitter", "augment.adaptive=true", "augment.signal=held_out"]
    assert "(one install, 3 seeds, ADA's pace: MNIST -12 % against -20 %; Fashion-MNIST +4 % against -1 %)" in held_out["caveat"]
    assert "rises while D tells training examples from held-out ones" in out["remedies"][1]
    # Where training would refuse the held-out signal, ADA's r_t steers, and the caveat says why.
    without_held_out = decide(healthy, overfit, "non_saturating", {**SINGLE, "held_out_usable": False})["remedy_settings"]
    unusable = without_held_out[0]
    assert unusable["sets"] == ["augment.policy=jitter", "augment.adaptive=true"]
    assert unusable["caveat"].startswith("steered by ADA's r_t: held-out examples cannot steer it here")
    assert "augment_held_out" not in [r["name"] for r in without_held_out]
    already = decide(healthy, overfit, "non_saturating", {**SINGLE, "augment_adaptive": True})
    assert [r["name"] for r in already["remedy_settings"]][0] == "more_data" and already["remedy_settings"][0]["sets"] == []


def test_a_discriminator_only_the_auc_finds_is_augmented_by_r_t_not_by_the_gap_its_threshold_hides():
    """Held-out steering reads the share gap at D's threshold, which a D that calls (nearly) all
    real data real hides (on the one benchmark run so found it gained 14 % to r_t's 21 %), so the
    remedy is ADA's r_t alone, and where r_t is at or below ADA's target (p may end near 0) the
    policy on every sample is proposed after it (on the one benchmark run so found, Fashion-MNIST
    seed 0, p = 1 raised FID by 58 %)."""
    hidden = {
        "flag": True,
        "flagged_by": "auc",
        "called_real_train": 1.0,
        "called_real_heldout": 0.99,
        "gap": 0.01,
        "z": 2.0,
        "auc": 0.7,
        "z_auc": 30.0,
        "auc_threshold": 0.6,
        "r_t_train": 1.0,
    }
    healthy = {**COLLAPSED, "modes_covered": 8}
    out = decide(healthy, {"discriminator_overfitting": hidden}, "non_saturating", {**SINGLE, "augment_target": 0.6})
    assert out["verdict"] == "discriminator_overfitting"
    assert "AUC of its logits, training against held-out, 0.70, z = 30.0" in out["explanation"]
    assert "at its own threshold it calls 100.0% of training examples real and 99.0% of held-out ones" in out["explanation"]
    augment = [r for r in out["remedy_settings"] if r["name"].startswith("augment")]
    assert [r["name"] for r in augment] == ["augment"] and augment[0]["sets"] == ["augment.policy=jitter", "augment.adaptive=true"]
    assert augment[0]["caveat"].startswith("steered by ADA's r_t: this D was found by the AUC") and "below" not in augment[0]["caveat"]
    # Usable held-out examples or not, held-out steering would not see this D: the same remedy.
    unusable = {**SINGLE, "augment_target": 0.6, "held_out_usable": False}
    assert decide(healthy, {"discriminator_overfitting": hidden}, "non_saturating", unusable)["remedy_settings"][0] == augment[0]
    # A D that calls few real digits real (r_t -0.6), or ends at ADA's target: ADA's p may end near
    # 0 (it rises early), so the policy on every sample is proposed after it, with what p = 1 cost.
    for r_t in (-0.6, 0.6):
        shy = {**hidden, "called_real_train": 0.2, "called_real_heldout": 0.15, "gap": 0.05, "r_t_train": r_t}
        context = {**SINGLE, "augment_target": 0.6}
        ada, fixed = decide(healthy, {"discriminator_overfitting": shy}, "non_saturating", context)["remedy_settings"][:2]
        assert ada["name"] == "augment" and ada["sets"] == ["augment.policy=jitter", "augment.adaptive=true"]
        assert f"r_t ended at {r_t:.2f}, at or below the target 0.6, so p may end near 0" in ada["caveat"]
        assert fixed["name"] == "augment_fixed" and fixed["sets"] == ["augment.policy=jitter"]
        assert fixed["caveat"].startswith(
            f"on every sample (p = 1): r_t on the training data ended at {r_t:.2f}, at or below ADA's target 0.6"
        )
        assert "53 % on Fashion-MNIST" in fixed["caveat"]
    # A run that already augments every sample is not told to do so again: ADA's p is the change.
    already = {**SINGLE, "augment_target": 0.6, "augment_policy": "jitter"}
    again = decide(healthy, {"discriminator_overfitting": shy}, "non_saturating", already)["remedy_settings"]
    assert [r["name"] for r in again if r["name"].startswith("augment")] == ["augment"]
    assert again[0]["sets"] == ["augment.policy=jitter", "augment.adaptive=true"]


def test_a_memorising_discriminator_is_a_cause_and_its_augmentation_carries_no_collapse_caveat():
    out = plan(["partial_collapse", "discriminator_overfitting"], "non_saturating", None, {**SINGLE, "kind": "image", "modes_total": 10})
    assert [r.name for r in out][:4] == ["augment", "augment_held_out", "earlier", "mixture"]
    assert out[0].caveat.startswith("ADA's r_t also rises for a D that merely wins")
    collapsed = plan(["partial_collapse"], "non_saturating", None, {**SINGLE, "kind": "image"})
    assert next(r for r in collapsed if r.name == "augment").caveat.startswith("in benchmarks/collapse.py")
    assert next(r for r in collapsed if r.name == "pack2").caveat.startswith("in benchmarks/collapse.py")


def test_held_out_examples_are_usable_only_where_every_part_has_a_batch_of_its_own(tmp_path):
    """The diagnosis proposes augment.signal=held_out only where training accepts it: every
    trained D (each part of a mixture) with test examples of its own, at least batch x pack in
    the half that steers (every other one: 127 test examples steer with 64)."""
    from gancore.diagnostics import _held_out_usable
    from gancore.io import write_json
    from gancore.layout import Layout
    from helpers import make_params

    params = make_params(batch_size=64)
    layout = Layout(tmp_path)
    write_json(layout.prepared_meta, {"count_test": 127})
    assert _held_out_usable(params, layout)
    write_json(layout.prepared_meta, {"count_test": 126})
    assert not _held_out_usable(params, layout)
    assert _held_out_usable(params.model_copy(update={"train": params.train.model_copy(update={"batch_size": 16})}), layout)

    write_json(layout.mixture, {"parts": [{"index": 0}, {"index": 1}]})
    write_json(layout.part(0).prepared_meta, {"own_test": True, "count_test": 500})
    write_json(layout.part(1).prepared_meta, {"own_test": False, "count_test": 500})  # scored on others' examples
    assert not _held_out_usable(params, layout)
    write_json(layout.part(1).prepared_meta, {"own_test": True, "count_test": 500})
    assert _held_out_usable(params, layout)


def test_a_wasserstein_critic_is_augmented_on_every_sample_and_an_adaptive_run_keeps_it_to_switch():
    """An adaptive p reads D's calls at its decision boundary, which a Wasserstein critic lacks
    (training refuses the setting): its memorisation, found by the AUC alone, gets the policy on
    every sample; a run that already augments gets more examples; and the Wasserstein remedy for
    an adaptive run turns the adaptive p off with it, or its run would be refused."""
    overfit = {
        "discriminator_overfitting": {
            **dict.fromkeys(("called_real_train", "called_real_heldout", "gap", "z", "r_t_train"), None),
            "flag": True,
            "auc": 0.8,
            "z_auc": 20.0,
            "auc_threshold": 0.6,
            "flagged_by": "auc",
        }
    }
    healthy = {**COLLAPSED, "modes_covered": 8}
    out = decide(healthy, overfit, "wasserstein_gp", {**SINGLE, "kind": "image"})
    assert out["verdict"] == "discriminator_overfitting"
    assert "AUC of its logits, training against held-out, 0.80" in out["explanation"] and "no threshold of its own" in out["explanation"]
    first = out["remedy_settings"][0]
    assert first["name"] == "augment_fixed" and first["sets"] == ["augment.policy=color,translation,cutout"]
    assert "loss wasserstein_gp" in first["caveat"] and "augment" not in [r["name"] for r in out["remedy_settings"]]
    fixed = decide(healthy, overfit, "wasserstein_gp", {**SINGLE, "augment_policy": "translation"})
    assert fixed["remedy_settings"][0]["name"] == "more_data"
    stalled = plan(["complete_collapse"], "minimax", _dynamics(vanishing=True, dominance=False), {**SINGLE, "augment_adaptive": True})
    wgan = next(r for r in stalled if r.name == "wasserstein_gp")
    assert wgan.sets == ("loss.name=wasserstein_gp", "train.n_critic=5", "augment.adaptive=false") and "decision boundary" in wgan.caveat
    plain = plan(["complete_collapse"], "minimax", _dynamics(vanishing=True, dominance=False), SINGLE)
    assert next(r for r in plain if r.name == "wasserstein_gp").sets == ("loss.name=wasserstein_gp", "train.n_critic=5")
    # a batch-normalised critic (DCGAN's default) is refused beside the penalty: turned off with it
    dcgan = plan(["complete_collapse"], "minimax", _dynamics(vanishing=True, dominance=False), {**SINGLE, "d_batch_norm": True})
    assert next(r for r in dcgan if r.name == "wasserstein_gp").sets == (
        "loss.name=wasserstein_gp",
        "train.n_critic=5",
        "model.options.d_batch_norm=false",
    )


def test_every_remedy_s_settings_are_accepted_beside_the_run_s_own():
    """A remedy applied to the run it was proposed for must pass the configuration checks, or
    gan-remedy refuses the whole sweep: the Wasserstein loss beside a held-out-steered p turns the
    p and its signal off together; a run with batch norm already is not told to add normalisation."""
    from gancore.config import validate

    run = {
        "device": "cpu",
        "data": {"name": "ring8"},
        "loss": {"name": "minimax"},
        "augment": {"policy": "jitter", "adaptive": True, "signal": "held_out"},
        "tracking": {"enabled": False},
    }
    context = {**SINGLE, "augment_adaptive": True, "augment_signal": "held_out", "augment_policy": "jitter", "batch_norm": True}
    remedies = plan(["complete_collapse"], "minimax", _dynamics(vanishing=True, dominance=True), context)
    wgan = next(r for r in remedies if r.name == "wasserstein_gp")
    assert wgan.sets == ("loss.name=wasserstein_gp", "train.n_critic=5", "augment.adaptive=false", "augment.signal=r_t")
    for remedy in remedies:
        tree = {k: dict(v) if isinstance(v, dict) else v for k, v in run.items()}
        for setting in remedy.sets:
            key, value = setting.split("=", 1)
            section, _, name = key.partition(".")
            node = tree.setdefault(section, {})
            for part in name.split(".")[:-1]:
                node = node.setdefault(part, {})
            node[name.split(".")[-1]] = value
        validate(tree)  # raises on a refused combination
    names = [r.name for r in remedies]
    assert "normalisation" not in names and "batch_norm" not in names


def test_a_generator_with_batch_norm_of_its_own_is_not_told_to_add_normalisation():
    """DCGAN's generator normalises without an option saying so; its drift in the training log
    shows it. Told to add "normalisation such as batch normalisation in the generator" (a review);
    a generator without any still is."""
    drifting = {**_dynamics(vanishing=True, dominance=True), "bn_drift": {"flag": True, "late_mean": 0.9, "early_mean": 0.5}}
    names = [r.name for r in plan(["complete_collapse", "vanishing_gradients"], "minimax", drifting, {**SINGLE, "arch_options": ["width"]})]
    assert "normalisation" not in names and "batch_norm" not in names and "non_saturating" in names
    plain = [
        r.name for r in plan(["complete_collapse", "vanishing_gradients"], "minimax", _dynamics(vanishing=True, dominance=True), SINGLE)
    ]
    assert "normalisation" in plain


def test_train_longer_lengthens_what_the_run_trained():
    """A mixture's parts train mixture.steps: the remedy doubled train.steps, which the parts do
    not read, so gan-remedy reran the baseline and called it a remedy. A points file's rows
    outside every cluster, a part of their own, train train.steps: both double (a review)."""
    single = next(r for r in plan(["not_converged"], "non_saturating", None, {**SINGLE, "steps": 300}) if r.name == "longer")
    assert single.sets == ("train.steps=600",)
    mixture = {**SINGLE, "mixture": True, "steps": 1000, "steps_key": "mixture.steps"}
    longer = next(r for r in plan(["not_converged"], "non_saturating", None, mixture) if r.name == "longer")
    assert longer.sets == ("mixture.steps=2000",)
    flat = {**mixture, "flat_part_steps": 5000}
    longer = next(r for r in plan(["not_converged"], "non_saturating", None, flat) if r.name == "longer")
    assert longer.sets == ("mixture.steps=2000", "train.steps=10000")


def test_earlier_and_the_mixture_come_with_what_the_run_needs_to_accept_them():
    """Found by a review: ``earlier`` beside a monitor that never checks within the steps, and the
    mixture beside the probe, were proposed as printed and refused by the configuration, which
    failed gan-remedy after its baseline had run. Data without known modes get no ``earlier``:
    keep_best's figures are the mode counts, so no generator would be kept."""
    copying = ["data_copying"]
    short = {**SINGLE, "steps": 300, "monitor_every": 500, "modes_total": 8}
    earlier = next(r for r in plan(copying, "non_saturating", None, short) if r.name == "earlier")
    assert earlier.sets == ("train.keep_best=high_quality_fraction", "sample.generator=best", "train.monitor_every=30")
    assert "earlier" not in [r.name for r in plan(copying, "non_saturating", None, {**SINGLE, "modes_total": None})]
    # data found to be one cluster: the sole part trains train.steps (5,000), but the configuration
    # checks the monitor against mixture.steps (1,000), which it reads before any partition exists
    # (a review: a check every 2,000 steps was proposed as is and refused)
    whole = {**short, "steps": 5000, "monitor_steps": 1000, "monitor_every": 2000}
    earlier = next(r for r in plan(copying, "non_saturating", None, whole) if r.name == "earlier")
    assert earlier.sets[-1] == "train.monitor_every=100"
    probed = next(r for r in plan(["partial_collapse"], "non_saturating", None, {**SINGLE, "probe": True}) if r.name == "mixture")
    assert probed.sets == ("mixture.enabled=true", "probe.enabled=false")


def test_a_remedy_the_run_s_configuration_refuses_is_listed_apart_not_proposed():
    from gancore.config import validate
    from gancore.diagnostics import without_refused_remedies

    params = validate(
        {"device": "cpu", "data": {"name": "ring8"}, "train": {"steps": 300, "monitor_every": 100}, "tracking": {"enabled": False}}
    )
    decision = {
        "remedies": ["fine", "refused"],
        "remedy_settings": [
            {"name": "pack2", "sets": ["model.pack=2"]},
            # the mixture's parts train mixture.steps (1,000): a monitor every 2,000 never checks
            {"name": "bad", "sets": ["train.keep_best=high_quality_fraction", "train.monitor_every=2000"]},
        ],
    }
    out = without_refused_remedies(params, decision)
    assert out["remedies"] == ["fine"] and [r["name"] for r in out["remedy_settings"]] == ["pack2"]
    (refused,) = out["remedies_refused"]
    assert refused["name"] == "bad" and any(p.startswith("train.keep_best") for p in refused["problems"])
