"""The remedies the diagnosis proposes: one catalogue, each remedy with the settings that apply it
and, where ``benchmarks/collapse.py`` measured it to help less than its name promises, that caveat.

:func:`plan` turns the diagnosis's findings into an ordered list. Remedies for a **cause** named
by the training dynamics come first (a saturating loss whose gradients vanished: the
non-saturating loss; a dominant discriminator: balance the two players), then the remedies of the
verdict's symptom, then those of the other findings; each once, and none the run already applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gancore.losses import boundary, is_saturating, spec
from gancore.names import DIFFAUGMENT, VECTOR_AUGMENTATIONS


@dataclass(frozen=True)
class Remedy:
    """A remedy, and the parameter settings (``key.path=value``, as for ``gan -S``) that apply it."""

    name: str
    text: str
    sets: tuple[str, ...] = ()
    caveat: str | None = None
    cause: str | None = None

    def described(self) -> str:
        out = self.text
        if self.cause:
            out = f"{out} [cause: {self.cause}]"
        if self.sets:
            out += f" (set: {' '.join(f'-S {s}' for s in self.sets)})"
        if self.caveat:
            out += f" Measured: {self.caveat}"
        return out

    def setting(self) -> dict[str, Any]:
        return {"name": self.name, "sets": list(self.sets), "cause": self.cause, "caveat": self.caveat}


# What benchmarks/collapse.py measured of the remedies that did not help there (README, "Curing
# mode collapse"): they stay proposed, with the measurement beside them.
PACKING_CAVEAT = (
    "in benchmarks/collapse.py at this project's budget (5,000 steps) packing covered more ring8 and grid25 modes than "
    "one GAN but cut its high-quality share to 21-54 % (one GAN's: 84-94 %), and cured no seed; "
    "PacGAN's gains were measured at 400k steps"
)
AUGMENT_COLLAPSE_CAVEAT = (
    "in benchmarks/collapse.py augmentation did not cure a collapsed single GAN; it answers a discriminator that "
    "memorises a small data set (benchmarks/data_limited.py)"
)
SEPARATE = "train separate GANs for different modes (a mixture of GANs, one per cluster or class of the data) and mix their samples"
DIVERSE = "train on more diverse data (more examples, or augmentation that the discriminator sees on real and generated samples)"
NON_SATURATING = "use the non-saturating generator loss -log D(G(z)), whose gradient does not vanish when D rejects the samples"
WASSERSTEIN = "use a Wasserstein loss with gradient penalty: the critic's gradients do not saturate"
NORMALISATION = "normalisation such as batch normalisation in the generator, against internal covariate shift"
LONGER = "train for more steps and compare the dynamics plot: D(x) and D(G(z)) should approach 1/2"
BALANCE = "balance the players: the discriminator learns faster than the generator can follow; give both the same learning rate and one D step per G step"
EARLIER = "stop earlier: keep the generator at its best monitored step instead of the last one"
AUGMENT_HELD_OUT = (
    "augment what the discriminator sees (DiffAugment, with an adaptive probability that rises while D tells training "
    "examples from held-out ones): real and generated samples alike, so that a small data set looks larger to D and it "
    "stops memorising it"
)
AUGMENT_FIXED = (
    "augment what the discriminator sees (DiffAugment): real and generated samples alike, so that a small data set looks "
    "larger to D and it stops memorising it"
)
AUGMENT_ADA = (
    "augment what the discriminator sees (DiffAugment, with ADA's adaptive probability, which rises while D is sure of "
    "the training data): real and generated samples alike, so that the data look more diverse to D"
)

# What benchmarks/data_limited.py measured of the two signals on runs whose D memorises (docs/data-limited.md):
# r_t gained more from 10,000 steps on (MNIST) and 20,000 (Fashion-MNIST); held-out steering cost less at 1,000,
# and so did r_t at ADA's own pace (the default), more than at the faster pace the tables before it ran at.
ADA_SHORT_RUNS = (
    "ADA's r_t also rises for a D that merely wins: in benchmarks/data_limited.py, on 10 % of the data, at ADA's pace "
    "(augment.kimg=500, the default) it cost 3 % (MNIST) and 0 % (Fashion-MNIST) FID at 1,000 steps, at augment.kimg=100 "
    "5 % and 14 %, where held-out steering cost nothing; by 20,000 steps both paces gained as much (one install, 3 seeds)"
)
HELD_OUT_GAINS_LESS = (
    "steered by the held-out examples that found this D: in benchmarks/data_limited.py it gained less than ADA's r_t "
    "at 20,000 steps on 10 % of the data (one install, 3 seeds, ADA's pace: MNIST -12 % against -20 %; Fashion-MNIST "
    "+4 % against -1 %)"
)

# The one benchmark run whose memorisation only the AUC found, retrained both ways on one install
# (docs/data-limited.md, "What the share gap misses").
THRESHOLD_HIDES = (
    "steered by ADA's r_t: this D was found by the AUC of its logits, while its threshold hides the share gap that held-out "
    "steering reads; on the benchmark run so found (benchmarks/data_limited.py, 10 % of MNIST, seed 0, 20,000 steps, FID "
    "91.4 unaugmented) ADA's r_t reached 72.1 and held-out steering 78.4 (augment.kimg=100)"
)
# What benchmarks/data_limited.py measured of p = 1 (docs/data-limited.md: 1,000 steps, and
# 20,000 on 10 % of MNIST and Fashion-MNIST, where D stopped memorising, AUC 0.51, but G trained slower).
EVERY_SAMPLE = (
    "on every sample (p = 1): r_t on the training data ended at {r_t:.2f}, at or below ADA's target {target:g}, and "
    "held-out steering reads the share gap D's threshold hides, so an adaptive p may end near 0; in "
    "benchmarks/data_limited.py p = 1 cost 25-31 % FID at 1,000 steps and, at 20,000 on 10 % of the data, "
    "27 % on MNIST and 53 % on Fashion-MNIST, though it ended D's memorising"
)
ENDS_LOW = "; r_t ended at {r_t:.2f}, at or below the target {target:g}, so p may end near 0 (it rises early, while D is sure of real data)"

# ADA's p reads D's calls of real and fake, which a critic without a decision boundary does not make.
NO_BOUNDARY = (
    "on every sample (p = 1): ADA's adaptive p reads D's calls at its decision boundary, and a critic whose loss does not "
    "change when a constant is added to it (loss {loss}) has none; in benchmarks/data_limited.py p = 1 ended D's memorising "
    "but cost FID at every length measured with the non-saturating loss"
)
WASSERSTEIN_FIXED = (
    "with the augmentation on every sample (augment.adaptive=false): ADA's adaptive p reads D's calls at its decision "
    "boundary, which the Wasserstein critic lacks"
)

HELD_OUT_UNUSABLE = (
    "steered by ADA's r_t: held-out examples cannot steer it here (a part without test examples of its own, or fewer than a batch of them)"
)

#: Every remedy name the catalogue below can propose (what ``gan-remedy --remedies`` chooses from).
NAMES: tuple[str, ...] = (
    "non_saturating",
    "wasserstein_gp",
    "balance",
    "mixture",
    "pack2",
    "pack4",
    "augment",
    "augment_held_out",
    "augment_fixed",
    "more_data",
    "earlier",
    "longer",
    "batch_norm",
    "normalisation",
)


def _more_data(
    context: Mapping[str, Any],
    for_collapse: bool,
    memorising: bool = False,
    overfitting: Mapping[str, Any] | None = None,
    loss: str | None = None,
) -> list[Remedy]:
    """More diverse data in its practical form: augmentation with settings (none when the run
    already augments adaptively: then only more examples remain). The first proposal, ``augment``,
    is always ADA's p steered by r_t, which gained most at the lengths that train a usable
    generator (benchmarks/data_limited.py: from 10,000 steps on MNIST, 20,000 on Fashion-MNIST;
    held-out steering was never ahead beyond the seeds' spread there). ``memorising``: the finding is a
    discriminator that memorises; where the share gap found it and held-out examples can steer,
    the signal that found it steers p second (``augment_held_out``: it cost nothing at 1,000 steps,
    where r_t cost FID, but gained less at 20,000). For other findings held-out steering would keep
    p near 0. A D whose memorisation only the AUC found (``overfitting``: the diagnosis's figures)
    gets no held-out steering, which reads the share gap that D's threshold hides; where its r_t
    ended at or below ADA's target, the policy on every sample (``augment_fixed``) goes second.
    Under a ``loss`` whose D has no decision boundary the policy on every sample is the only
    augmentation (training refuses an adaptive p there)."""
    adaptive_possible = boundary(loss) is not None
    if context.get("augment_adaptive") or (context.get("augment_policy") and not adaptive_possible):
        return [Remedy("more_data", DIVERSE)]
    policy = ",".join(VECTOR_AUGMENTATIONS if context.get("kind") == "vector" else DIFFAUGMENT)
    if not adaptive_possible:
        return [Remedy("augment_fixed", AUGMENT_FIXED, (f"augment.policy={policy}",), caveat=NO_BOUNDARY.format(loss=loss))]
    ada = (f"augment.policy={policy}", "augment.adaptive=true")
    found = overfitting or {}
    caveat: str | None
    after: list[Remedy] = []
    if not memorising:
        caveat = AUGMENT_COLLAPSE_CAVEAT if for_collapse else None
    elif found.get("flagged_by") == "auc":  # held-out steering could not see it, usable or not
        caveat = THRESHOLD_HIDES
        r_t, target = found.get("r_t_train"), context.get("augment_target")
        if r_t is not None and target is not None and r_t <= target:
            # r_t ended low: ADA's p may end near 0 (though it rises early), so p = 1 goes beside it
            # (unless the run already augments every sample), second: it raised FID in every benchmark
            # configuration measured, this very case included. gan-remedy measures which helps.
            caveat += ENDS_LOW.format(r_t=r_t, target=target)
            if not context.get("augment_policy"):
                every = EVERY_SAMPLE.format(r_t=r_t, target=target)
                after = [Remedy("augment_fixed", AUGMENT_FIXED, (f"augment.policy={policy}",), caveat=every)]
    elif not context.get("held_out_usable", True):  # training would refuse the held-out signal (gancore.training)
        caveat = HELD_OUT_UNUSABLE
    else:
        caveat = ADA_SHORT_RUNS
        after = [Remedy("augment_held_out", AUGMENT_HELD_OUT, (*ada, "augment.signal=held_out"), caveat=HELD_OUT_GAINS_LESS)]
    return [Remedy("augment", AUGMENT_ADA, ada, caveat=caveat), *after]


def _packing(m: int) -> Remedy:
    return Remedy(
        f"pack{m}",
        f"packing with {m} samples (PacGAN{m}): the discriminator judges {m} samples jointly, so a lack of diversity becomes visible to it",
        (f"model.pack={m}",),
        caveat=PACKING_CAVEAT,
    )


def _mixture_sets(context: Mapping[str, Any]) -> tuple[str, ...]:
    """Turn the mixture on; images are one part under ``partition: auto``, so they are split by
    k-means (their class labels would be the mode count's answer)."""
    kmeans = ("mixture.partition=kmeans",) if context.get("kind") == "image" else ()
    # The probe needs one discriminator (the configuration refuses it beside a mixture).
    return ("mixture.enabled=true", *kmeans, *(("probe.enabled=false",) if context.get("probe") else ()))


def _catalogue(name: str, loss: str | None, context: Mapping[str, Any], dynamics: Mapping[str, Any] | None) -> list[Remedy]:
    """The remedies of one finding (``name``: a verdict, or a cause found in the dynamics)."""
    pack = int(context.get("pack") or 1)
    out: list[Remedy] = []
    if name == "saturating_loss":
        out.append(Remedy("non_saturating", NON_SATURATING, ("loss.name=non_saturating",), cause="the saturating minimax loss"))
    found = spec(loss)
    if name in ("saturating_loss", "vanishing_gradients") and not (found and found.penalty):
        # An adaptive p needs D's decision boundary (the configuration refuses it under this loss).
        fixed: tuple[str, ...] = ()
        if context.get("augment_adaptive"):
            # A held-out signal without the adaptive p is refused too (gancore.config_checks).
            fixed = ("augment.adaptive=false",) + (("augment.signal=r_t",) if context.get("augment_signal") == "held_out" else ())
        caveat = WASSERSTEIN_FIXED if fixed else None
        # The penalty is refused with a batch-normalised critic (gancore.config_checks).
        critic = ("model.options.d_batch_norm=false",) if context.get("d_batch_norm") else ()
        out.append(Remedy("wasserstein_gp", WASSERSTEIN, ("loss.name=wasserstein_gp", "train.n_critic=5", *critic, *fixed), caveat=caveat))
    if name == "dominant_discriminator":
        lr_g, lr_d, n_critic = context.get("lr_g"), context.get("lr_d"), int(context.get("n_critic") or 1)
        sets = ([f"train.lr_d={lr_g}"] if lr_g and lr_d and lr_d > lr_g else []) + (["train.n_critic=1"] if n_critic > 1 else [])
        if sets:
            out.append(
                Remedy("balance", BALANCE, tuple(sets), cause=f"a dominant discriminator (lr_d {lr_d} vs lr_g {lr_g}, n_critic {n_critic})")
            )
    if name in ("complete_collapse", "partial_collapse", "intra_mode_collapse"):
        if not context.get("mixture"):
            out.append(Remedy("mixture", SEPARATE, _mixture_sets(context)))
        elif context.get("mixture_parts") == 1 and context.get("partition_method") != "kmeans":
            # images kept whole (or one class): split them; data k-means found one cluster would be found so again
            out.append(Remedy("mixture", SEPARATE, ("mixture.partition=kmeans",)))
        out += [_packing(m) for m in (2, 4) if pack < m]
        out += _more_data(context, for_collapse=True, loss=loss)
    if name in ("data_copying", "discriminator_overfitting"):
        memorising = name == "discriminator_overfitting"
        found_overfitting = (dynamics or {}).get("discriminator_overfitting")
        out += _more_data(context, for_collapse=False, memorising=memorising, overfitting=found_overfitting, loss=loss)
        steps, every = int(context.get("monitor_steps") or context.get("steps") or 0), int(context.get("monitor_every") or 0)
        # The monitor's figures keep_best selects on are the mode counts: data without known
        # modes would keep no generator, and sample.generator=best would then find none.
        if steps and every and context.get("modes_total"):
            # keep_best needs a check within the steps (the configuration refuses it otherwise)
            check = (f"train.monitor_every={max(1, steps // 10)}",) if every > steps else ()
            out.append(Remedy("earlier", EARLIER, ("train.keep_best=high_quality_fraction", "sample.generator=best", *check)))
    if name in ("vanishing_gradients", "not_converged"):
        if name == "not_converged" and context.get("steps"):
            longer: tuple[str, ...] = (f"{context.get('steps_key', 'train.steps')}={2 * int(context['steps'])}",)
            if context.get("flat_part_steps"):  # the rows outside every cluster's part trains train.steps
                longer += (f"train.steps={2 * int(context['flat_part_steps'])}",)
            out.append(Remedy("longer", LONGER, longer))
        if name == "not_converged" and not context.get("mixture") and (context.get("modes_total") or 0) > 1:
            # Several modes one GAN has not learned: parts are each one easy mode (benchmarks/collapse.py:
            # grid25's not-converged single GANs reach every mode at the protocol's ceiling as a mixture).
            out.append(Remedy("mixture", SEPARATE, _mixture_sets(context)))
        # A generator with batch norm already gets none: the option on, or any plugin's batch norm,
        # whose drift the training log holds (DCGAN's, which has no option, was told to add it).
        normalised = context.get("batch_norm") or (dynamics or {}).get("bn_drift") is not None
        if not normalised:
            if "batch_norm" in (context.get("arch_options") or ()):
                out.append(Remedy("batch_norm", NORMALISATION, ("model.options.batch_norm=true",)))
            else:
                out.append(Remedy("normalisation", NORMALISATION))
    return out


def causes(loss: str | None, dynamics: Mapping[str, Any] | None) -> list[str]:
    """Causes the training dynamics name: a saturating loss that stopped the generator's gradients,
    a discriminator that dominates."""
    found = []
    vanishing = ((dynamics or {}).get("vanishing_gradients") or {}).get("flag")
    dominance = ((dynamics or {}).get("dominance") or {}).get("flag")
    if is_saturating(loss) and (vanishing or dominance):
        found.append("saturating_loss")
    if dominance:
        found.append("dominant_discriminator")
    return found


def plan(verdicts: Sequence[str], loss: str | None, dynamics: Mapping[str, Any] | None, context: Mapping[str, Any]) -> list[Remedy]:
    """The remedies for ``verdicts`` (the verdict first, then every other finding's), causes first."""
    # A discriminator that memorises its data is a cause too (of poor samples, of collapse):
    # its remedy, augmentation without the collapse caveat, goes with the causes.
    memorising = ["discriminator_overfitting"] if "discriminator_overfitting" in verdicts else []
    order = [*causes(loss, dynamics), *memorising, *dict.fromkeys(v for v in verdicts if v != "healthy")]
    if not [v for v in verdicts if v != "healthy"]:
        return []
    seen: set[str] = set()
    out: list[Remedy] = []
    for name in order:
        for remedy in _catalogue(name, loss, context, dynamics):
            if remedy.name not in seen:
                seen.add(remedy.name)
                out.append(remedy)
    return out
