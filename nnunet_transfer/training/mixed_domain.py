"""``DomainAwareMixin``: each case's domain, and a share of every batch from the target domain."""

from __future__ import annotations

from typing import List, Optional

from nnunet_transfer.domains import read_domains, target_domain_of
from nnunet_transfer.training.progress import DomainProgressMixin
from nnunet_transfer.training.sampling import DomainBalancedDataLoader, swap_loader_class


class DomainAwareMixin(DomainProgressMixin):
    """Knows each case's domain; draws ``target_share`` of every batch from the target domain.

    Logs the validation's pseudo-Dice per domain and draws ``progress_domain.png``
    (:class:`~nnunet_transfer.training.progress.DomainProgressMixin`).

    Domains come from dataset.json's ``domains`` map, else the BraTS case prefix. The target
    domain is ``target_domain``, else dataset.json's ``target_domain``, else the rarest domain
    among the training cases. ``target_share=None`` samples cases uniformly (nnU-Net's way).
    Trainers with ``batch_per_domain`` (a source and a target mini-batch per step) place
    nnU-Net's foreground slots per domain (``DomainBalancedDataLoader``); the choice is run
    state (a run saved before it existed resumes with nnU-Net's slots per batch).
    """

    target_domain: Optional[str] = None
    target_share: Optional[float] = 0.5
    min_training_domains: int = 1

    def check_training_cases(self, train_keys: List[str], val_keys: List[str]) -> None:
        super().check_training_cases(train_keys, val_keys)
        self.case_domains = read_domains(self.dataset_json, list(train_keys) + list(val_keys))
        missing = [k for k in train_keys if self.case_domains[k] is None]
        if missing:
            raise RuntimeError(
                f"{len(missing)} training case(s) have no domain, e.g. {missing[:5]}. "
                f"{self.__class__.__name__} needs one per case. Fix: add a \"domains\": {{case_id: name}} map to "
                f"dataset.json (nnunet-transfer convert/combine write it) and preprocess again, or use BraTS case "
                f"ids (BraTS-GLI-..., BraTS-SSA-...).")
        train_domains = {k: self.case_domains[k] for k in train_keys}
        counts = {d: sum(v == d for v in train_domains.values()) for d in sorted(set(train_domains.values()))}
        if len(counts) < self.min_training_domains:
            raise RuntimeError(
                f"{self.__class__.__name__} needs training cases from at least {self.min_training_domains} "
                f"domains, but fold {self.fold} trains on {counts} only. Fix: train on a combined dataset "
                f"(nnunet-transfer combine) and check splits_final.json.")
        target = self.target_domain or target_domain_of(self.dataset_json, train_domains)
        saved = self.resumed_decision("domains")
        if saved is not None and (saved["target_domain"], saved["target_share"]) != (target, self.target_share):
            raise RuntimeError(
                f"{self.__class__.__name__}: the checkpoint's run trained with target domain "
                f"{saved['target_domain']!r} and target share {saved['target_share']}, this one would use {target!r} "
                f"and {self.target_share}; did dataset.json or the trainer change? Fix: restore them, or train anew.")
        if target not in counts:
            source = ("the trainer's target_domain" if self.target_domain else
                      "dataset.json's target_domain" if self.dataset_json.get("target_domain") else "the target domain")
            raise RuntimeError(
                f"{source} is {target!r}, but fold {self.fold} trains on the domains {sorted(counts)} only "
                f"(domain names are case-sensitive). Fix: set it to one of {', '.join(map(repr, sorted(counts)))}.")
        self.active_target_domain = target
        self.training_domain_counts = counts
        per_domain = bool(getattr(self, "batch_per_domain", False))
        if saved is not None:
            per_domain = saved.get("foreground_oversampling", "batch") == "per_domain"
        self.foreground_oversampling = "per_domain" if per_domain else "batch"
        self.print_to_log_file(f"nnunet-transfer: training cases per domain {counts}; target domain "
                               f"{self.active_target_domain}; target share per batch {self.target_share}"
                               f"{' (uniform sampling over cases)' if self.target_share is None else ''}"
                               f"{'; foreground oversampled per domain' if per_domain else ''}")

    def run_state(self) -> dict:
        state = super().run_state()
        if getattr(self, "active_target_domain", None) is not None:
            state["domains"] = {"target_domain": self.active_target_domain, "target_share": self.target_share,
                                "training_cases_per_domain": dict(self.training_domain_counts),
                                "foreground_oversampling": self.foreground_oversampling}
        return state

    def get_dataloaders(self):
        def factory(*args, **kwargs):
            return DomainBalancedDataLoader(*args, case_domains=self.case_domains,
                                            target_domain=self.active_target_domain,
                                            target_share=self.target_share,
                                            per_domain_oversampling=self.foreground_oversampling == "per_domain",
                                            **kwargs)

        with swap_loader_class(factory):
            return super().get_dataloaders()
