"""Pretrain (or fine-tune) a VLP model on image-report pairs.

    accelerate launch recipes/pretrain.py                      # tiny model, built-in demo data, a few minutes on CPU
    accelerate launch recipes/pretrain.py --config recipes/configs/lovt.yaml --train-data my/manifest.jsonl
    accelerate launch recipes/pretrain.py --init-from runs/base/final --heads lovt --lock-text   # fine-tune
    accelerate launch --multi_gpu --num_processes 2 recipes/pretrain.py ...   # several processes (GPUs, or CPU/gloo)

Flags override the YAML config. The final model and processor land in OUTPUT_DIR/final, the best by the validation
metric in OUTPUT_DIR/best; checkpoints in OUTPUT_DIR/checkpoints (`--resume` continues from the latest); tracker logs
(TensorBoard by default) in OUTPUT_DIR/logs. Values Accelerate owns (mixed precision) come from the launcher
(`accelerate launch --mixed_precision bf16`, or `accelerate config`) unless the config or a flag sets them.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.logging import get_logger
from accelerate.utils import send_to_device, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from vlp import FeatureCache
from vlp.augmentation import Augmenter, load_augmentation
from vlp.configuration import HeadInput, normalize_heads
from vlp.registry import head_class, load_plugins
from vlp.training.collate import SkipCounter, VLPCollator
from vlp.training.config import PretrainConfig
from vlp.training.data import build_train_dataset, build_validation_dataset
from vlp.training.model import build_run_model, loading_summary, run_model_values
from vlp.training.optim import freeze, parameter_groups
from vlp.training.validation import validate

logger = get_logger("vlp.pretrain")
MODEL_INPUTS = (*(i.value for i in HeadInput), "attention_mask")  # the batch keys VLPModel.forward takes
PRETRAINED_LR_WARNING = (5e-4, 0.05)  # lr, weight decay at or above which pretrained towers are likely damaged


def parse_args(argv=None) -> tuple[PretrainConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with model/data/train/output_dir sections")
    p.add_argument("--preset", help="model preset name or JSON file (model.preset)")
    p.add_argument("--init-from", help="a saved VLPModel to start from: a folder, or a hub id in the local cache "
                                       "(model.init_from); new heads start from their initial values")
    p.add_argument("--heads", help="comma-separated heads to enable, e.g. lovt (model.config.heads; settings the "
                                   "config gives a named head are kept)")
    p.add_argument("--plugin", action="append", dest="plugins",
                   help="a module name or .py file to import first: heads of your own, registered with "
                        "@vlp.register_head (model.plugins; repeatable)")
    p.add_argument("--output-dir")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--train-data", help="manifest: JSONL/CSV/Parquet or a saved datasets folder (data.train)")
    p.add_argument("--val-data", help="validation manifest (data.val)")
    p.add_argument("--val-split", help="validate on the rows of this split (data.val_split; of --val-data, else of "
                                       "the training manifest, the demo data's 'test' for instance)")
    p.add_argument("--image-column")
    p.add_argument("--text-column", help="the report column; 'none' trains on images alone (heads that need no report)")
    p.add_argument("--labels-column")
    p.add_argument("--image-root")
    p.add_argument("--augmentation", help="'none', a preset (lovt) or a YAML file (data.augmentation)")
    p.add_argument("--strict", action="store_true", default=None, help="stop at the first bad row")
    p.add_argument("--streaming", action="store_true", default=None,
                   help="read the manifest as needed instead of loading it (very large manifests)")
    p.add_argument("--num-workers", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--grad-accum", type=int, help="micro-batches per step")
    p.add_argument("--lock-image", action="store_true", default=None, help="freeze the image tower (train.freeze)")
    p.add_argument("--lock-text", action="store_true", default=None, help="freeze the text tower")
    p.add_argument("--freeze-text-layers", type=int, help="freeze the text tower's embeddings and first N layers")
    p.add_argument("--freeze", action="append", dest="freeze_patterns",
                   help="freeze parameters whose names match this pattern (fnmatch; repeatable)")
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"],
                   help="overrides the launcher's --mixed_precision (by default the launcher's choice stands)")
    p.add_argument("--grad-checkpointing", action="store_true", default=None)
    p.add_argument("--seed", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--eval-every", type=int, help="validate every N steps (and at the end)")
    p.add_argument("--best-metric", help="logged metric that picks OUTPUT_DIR/best, e.g. val/mean_auroc")
    p.add_argument("--report-to", help="trackers: tensorboard (default), wandb, ..., all or none (comma-separated)")
    p.add_argument("--cpu-threads", type=int, help="CPU-only runs: threads per process (default: measured, see docs)")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="push the final model, with a model card, to this Hub "
                                                             "repo at the end (needs a token: hf auth login)")
    p.add_argument("--hub-private", action="store_true", help="with --push-to-hub: create the repo private")
    p.add_argument("--resume", nargs="?", const="latest",
                   help="continue from OUTPUT_DIR's latest checkpoint (or the checkpoint folder given)")
    args = p.parse_args(argv)
    config = PretrainConfig.from_yaml(args.config) if args.config else PretrainConfig()
    overrides = {
        ("model", "preset"): args.preset, ("model", "init_from"): args.init_from, ("data", "train"): args.train_data,
        ("data", "val"): args.val_data, ("data", "val_split"): args.val_split,
        ("data", "image_column"): args.image_column, ("data", "text_column"): args.text_column,
        ("data", "labels_column"): args.labels_column, ("data", "image_root"): args.image_root,
        ("data", "augmentation"): args.augmentation,
        ("data", "strict"): args.strict, ("data", "streaming"): args.streaming,
        ("data", "num_workers"): args.num_workers,
        ("train", "max_steps"): args.max_steps, ("train", "batch_size"): args.batch_size, ("train", "lr"): args.lr,
        ("train", "weight_decay"): args.weight_decay, ("train", "warmup_steps"): args.warmup_steps,
        ("train", "grad_accum"): args.grad_accum, ("train", "mixed_precision"): args.mixed_precision,
        ("train", "grad_checkpointing"): args.grad_checkpointing, ("train", "seed"): args.seed,
        ("train", "log_every"): args.log_every, ("train", "save_every"): args.save_every,
        ("train", "eval_every"): args.eval_every, ("train", "best_metric"): args.best_metric,
        ("train", "report_to"): args.report_to, ("train", "cpu_threads"): args.cpu_threads,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(config, section), key, value)
    frozen = config.train.freeze
    frozen.image_tower = bool(args.lock_image or frozen.image_tower)
    frozen.text_tower = bool(args.lock_text or frozen.text_tower)
    if args.freeze_text_layers is not None:
        frozen.text_layers = args.freeze_text_layers
    frozen.patterns = [*frozen.patterns, *(args.freeze_patterns or [])]
    if args.text_column is not None and args.text_column.lower() == "none":
        config.data.text_column = None
    if args.output_dir:
        config.output_dir = args.output_dir
    if args.heads is not None:  # these heads, with the settings the config gives them
        settings = normalize_heads(config.model.config.get("heads"))
        config.model.config["heads"] = {h: settings.get(h) for h in args.heads.split(",") if h}
    if args.plugins:
        config.model.plugins = [*config.model.plugins, *args.plugins]
    return config, args


def latest_checkpoint(output_dir: Path) -> Path | None:
    ckpts = sorted((output_dir / "checkpoints").glob("step_*"))
    ckpts = [c for c in ckpts if (c / "trainer_state.json").is_file()]
    return ckpts[-1] if ckpts else None


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: dict, keep: int) -> None:
    """Write the full training state atomically (a killed run never leaves a half checkpoint) and prune old ones."""
    final = output_dir / "checkpoints" / f"step_{state['step']:07d}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted((output_dir / "checkpoints").glob("step_???????"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def save_model(accelerator: Accelerator, model, processor, folder: Path, training: dict,
               extra: dict | None = None) -> None:
    """The model and processor in `folder`, with the run's `training_config.json` (what the model card reports);
    written next to it and renamed: never half a model."""
    if accelerator.is_main_process:
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "training_config.json").write_text(json.dumps(training, indent=2, default=str))
        if extra is not None:
            (tmp / "trainer_state.json").write_text(json.dumps(extra, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    accelerator.wait_for_everyone()


def has_accelerator_device() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def cpu_threads_per_process(local_processes: int, sample_seconds: float = 0.5) -> int:
    """The physical cores this process may use (its CPU affinity, when the OS reports one) that are not busy with
    other work, shared evenly among the processes on this machine, at least 1. Busy cores are measured over
    `sample_seconds` at start. On 2 cores a process with 2 threads ran the tiny step 2.0x faster than with 1 when the
    machine was idle, 1.3x slower while another job kept one core busy, and two processes with 2 threads each 1.5x
    slower than with 1 each (docs/benchmarks/cpu_threads.md)."""
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)))
    busy = round(psutil.cpu_percent(interval=sample_seconds) / 100 * cores) if sample_seconds > 0 else 0
    return max(1, (cores - busy) // max(1, local_processes))


def trackers(report_to: str) -> list[str] | str | None:
    names = [n.strip() for n in report_to.split(",") if n.strip()]
    if names in ([], ["none"]):
        return None
    return "all" if names == ["all"] else names


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


def exclude_idle_parameters(model, with_text: bool) -> list[str]:
    """Freeze the parameters this configuration never trains (`VLPModel.idle_parameters`): left out of the
    optimizer and of DistributedDataParallel's gradient reduction, which would otherwise wait for them."""
    idle = model.idle_parameters(with_text=with_text)
    named = dict(model.named_parameters())
    for name in idle:
        named[name].requires_grad_(False)
    return idle


def pretrained_parts(config: PretrainConfig, model) -> list[str]:
    """The top-level parts whose weights come pretrained: the towers with weights, everything with --init-from."""
    if config.model.init_from:
        return ["image_tower", "text_tower", "image_projection", "text_projection"]
    parts = []
    if model.config.image_tower.pretrained or model.config.image_tower.checkpoint_path:
        parts.append("image_tower")
    if model.config.text_tower.model_name:
        parts.append("text_tower")
    return parts


def warn_about_pretrained_rates(model, groups: list[dict], parts: list[str]) -> None:
    """A warning when pretrained weights train at a rate that usually damages them (BERT-size models are fine-tuned
    at 1e-5 to 1e-4 with little weight decay)."""
    owner = {id(p): name.split(".")[0] for name, p in model.named_parameters()}
    lr_limit, wd_limit = PRETRAINED_LR_WARNING
    for group in groups:
        tops = {owner[id(p)] for p in group["params"]} & set(parts)
        if tops and (group["lr"] >= lr_limit or group["weight_decay"] >= wd_limit):
            logger.warning("pretrained %s train at lr %g, weight decay %g (group %r): rates this high usually damage "
                           "pretrained weights; lower them with --lr/--weight-decay or train.param_groups, or freeze "
                           "them (--lock-text, --freeze-text-layers)", ", ".join(sorted(tops)), group["lr"],
                           group["weight_decay"], group["name"], main_process_only=True)


def main(argv=None) -> int:
    config, args = parse_args(argv)
    load_plugins(config.model.plugins)
    train, data = config.train, config.data
    output_dir = Path(config.output_dir)
    # the model's configuration (its heads) decides what the run needs, so it is resolved before the Accelerator
    model_values = run_model_values(config.model)
    dynamic = any(getattr(head_class(name), "data_dependent_graph", False)
                  for name in normalize_heads(model_values.get("heads")))
    accelerator = Accelerator(
        cpu=not has_accelerator_device(),  # without it, several CPU processes would not form a gloo group
        mixed_precision=train.mixed_precision,  # None: the launcher's (or `accelerate config`'s) choice
        log_with=trackers(train.report_to), project_dir=str(output_dir / "logs"),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # the schedule counts optimizer steps (warmup_steps, max_steps): one scheduler step per optimizer step, not
        # Accelerate's default of one per process per step
        step_scheduler_with_optimizer=False,
        # idle parameters are frozen below; a head whose steps leave parameters without gradient asks DDP to look
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=dynamic)])
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        stream=sys.stdout)
    set_seed(train.seed)
    logger.info("mixed precision: %s", accelerator.mixed_precision, main_process_only=True)
    if accelerator.device.type == "cpu":
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(train.cpu_threads or cpu_threads_per_process(local_processes))
        logger.info("CPU training: %d threads per process", torch.get_num_threads(), main_process_only=True)

    with accelerator.main_process_first():
        dataset = build_train_dataset(data, strict=data.strict, rank=accelerator.process_index,
                                      world_size=accelerator.num_processes)
        val_dataset = build_validation_dataset(data, strict=data.strict)
    streaming = isinstance(dataset, torch.utils.data.IterableDataset)
    model, processor, loading = build_run_model(config.model, model_values, dataset.label_names)
    if loading is not None:
        logger.info("initialised from %s: %s", config.model.init_from, loading_summary(loading),
                    main_process_only=True)
    if train.grad_checkpointing:
        model.gradient_checkpointing_enable()
    frozen = freeze(model, train.freeze)
    if frozen:
        logger.info("%d parameters frozen by train.freeze", len(frozen), main_process_only=True)
    idle = exclude_idle_parameters(model, with_text=data.text_column is not None)
    if idle:
        logger.info("%d parameters are idle in this configuration and not trained: %s", len(idle),
                    ", ".join(idle[:8]) + (", ..." if len(idle) > 8 else ""), main_process_only=True)

    augmentation = load_augmentation(data.augmentation)
    augmenter = Augmenter(augmentation, processor.image_processor, seed=train.seed) if augmentation else None
    inputs = frozenset(model.batch_inputs())
    if HeadInput.VIEWS in inputs and (augmentation is None or augmentation.views < 2):
        raise ValueError("the model's heads compare augmented views of each image: set data.augmentation with "
                         "views: 2 or more")
    collator = VLPCollator(processor, inputs=inputs, augmenter=augmenter)
    # a streaming dataset deals rows to ranks and workers itself, so its loader is not sharded by Accelerate
    loader = DataLoader(dataset, batch_size=train.batch_size, shuffle=not streaming, drop_last=True,
                        num_workers=data.num_workers, collate_fn=collator,
                        # workers made anew each epoch see the collator's epoch (the augmentation's seed)
                        persistent_workers=data.num_workers > 0 and augmenter is None,
                        # its own generator: a loader iterator made on --resume must not draw from the global RNG,
                        # or every dropout mask after the resume would differ from the uninterrupted run's
                        generator=torch.Generator().manual_seed(train.seed))
    val_loader = None if val_dataset is None else DataLoader(
        val_dataset, batch_size=train.batch_size, shuffle=False, num_workers=data.num_workers,
        collate_fn=VLPCollator(processor, inputs=inputs - {HeadInput.VIEWS}))
    groups = parameter_groups(model, train.lr, train.weight_decay, train.param_groups)
    warn_about_pretrained_rates(model, groups, pretrained_parts(config, model))
    optimizer = torch.optim.AdamW(groups, lr=train.lr, betas=(0.9, 0.98), eps=1e-6)
    scheduler = get_cosine_schedule_with_warmup(optimizer, train.warmup_steps, train.max_steps)
    prepared = [model, optimizer, scheduler] + ([] if streaming else [loader]) + \
        ([] if val_loader is None else [val_loader])
    prepared = accelerator.prepare(*prepared)
    model, optimizer, scheduler = prepared[:3]
    if not streaming:
        loader = prepared[3]
    if val_loader is not None:
        val_loader = prepared[-1]
    unwrapped = accelerator.unwrap_model(model)

    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "best": None}
    if args.resume:
        ckpt = latest_checkpoint(output_dir) if args.resume == "latest" else Path(args.resume)
        if ckpt is None:
            logger.info("--resume: no checkpoint in %s yet; starting from scratch", output_dir / "checkpoints")
        else:
            accelerator.load_state(str(ckpt))
            state = {"best": None, **json.loads((ckpt / "trainer_state.json").read_text())}
            logger.info("resumed from %s at step %d", ckpt, state["step"])

    accelerator.init_trackers("pretrain", config=_flat_hparams(config))
    logger.info("training %s on %s rows: %d steps of %d x %d x %d processes", config.model.init_from or
                config.model.preset, "streamed" if streaming else len(dataset), train.max_steps, train.batch_size,
                train.grad_accum, accelerator.num_processes)
    label_names = None if val_dataset is None else val_dataset.label_names

    def training_record() -> dict:
        """What the run was: its config, steps and epochs so far, processes, precision, the best validation."""
        import transformers

        import vlp

        return {"config": config.to_dict(), "steps": state["step"], "epochs": state["epoch"],
                "processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
                "global_batch": train.batch_size * train.grad_accum * accelerator.num_processes,
                "train_rows": None if streaming else len(dataset), "best": state["best"],
                "versions": {"vlp": vlp.__version__, "torch": torch.__version__,
                             "transformers": transformers.__version__}}

    def run_validation() -> None:
        metrics = validate(accelerator, unwrapped, processor, val_loader, label_names)
        accelerator.log(metrics, step=state["step"])
        logger.info("step %d: %s", state["step"], ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
                    main_process_only=True)
        value = metrics.get(train.best_metric)
        if value is None:
            raise ValueError(f"train.best_metric {train.best_metric!r} is not among the validation metrics "
                             f"{sorted(metrics)}")
        if state["best"] is None or value > state["best"]["value"]:
            state["best"] = {"metric": train.best_metric, "value": value, "step": state["step"]}
            save_model(accelerator, unwrapped, processor, output_dir / "best", training_record(),
                       extra={**state["best"], **metrics})
            logger.info("new best %s %.4f: saved to %s", train.best_metric, value, output_dir / "best",
                        main_process_only=True)

    progress = tqdm(total=train.max_steps, initial=state["step"], disable=not accelerator.is_local_main_process,
                    desc="pretrain")
    skips = SkipCounter()
    running: dict[str, list[torch.Tensor]] = {}  # each logged value since the last log (synced when logged)
    micro: list[dict] = []
    validated_at = None
    while state["step"] < train.max_steps:
        collator.set_epoch(state["epoch"])
        if streaming:
            dataset.set_epoch(state["epoch"])
            batches = (send_to_device(b, accelerator.device)
                       for b in itertools.islice(loader, state["batches_in_epoch"], None))
        else:
            loader.set_epoch(state["epoch"])
            batches = accelerator.skip_first_batches(loader, state["batches_in_epoch"]) \
                if state["batches_in_epoch"] else loader
        for batch in _until_any_rank_ends(accelerator, batches):
            state["batches_in_epoch"] += 1
            for index, path, reason in skips.add(batch["skipped"]):
                logger.warning("skipped row %s (%s): %s", index, path, reason, main_process_only=False)
            if not _all_have_data(accelerator, batch):
                continue
            micro.append(batch)
            if len(micro) < train.grad_accum:
                continue
            losses = train_step(accelerator, model, unwrapped, optimizer, scheduler, micro, train.max_grad_norm,
                                train.cache_negatives)
            micro = []
            state["step"] += 1
            progress.update(1)
            for name, value in losses.items():
                running.setdefault(name, []).append(value)
            if state["step"] % train.log_every == 0 or state["step"] == train.max_steps:
                # means over the steps of this window: shorter than log_every at the end or after a resume
                logs = {f"train/{k}": float(torch.stack(v).float().mean()) for k, v in running.items()}
                logs["train/lr"] = scheduler.get_last_lr()[0]
                logs.update({f"train/lr/{g['name']}": lr for g, lr in zip(optimizer.param_groups,
                                                                         scheduler.get_last_lr())
                             if g["name"] != "default" and not g["name"].endswith("/no_decay")})
                logs["train/logit_scale"] = float(unwrapped.scale().detach())
                logs["train/skipped_rows"] = len(skips.seen)
                accelerator.log(logs, step=state["step"])
                progress.set_postfix(loss=f"{logs.get('train/loss', float('nan')):.3f}")
                running = {}
            if val_loader is not None and train.eval_every and state["step"] % train.eval_every == 0:
                run_validation()
                validated_at = state["step"]
            if state["step"] % train.save_every == 0 and state["step"] < train.max_steps:
                save_checkpoint(accelerator, output_dir, state, train.keep_checkpoints)
            if state["step"] >= train.max_steps:
                break
        else:
            if state["batches_in_epoch"] == 0:
                raise ValueError(f"the training data gave no full batch of {train.batch_size} in an epoch: lower "
                                 "--batch-size or check the manifest (every row may have been skipped)")
            logger.info("epoch %d done: %s", state["epoch"], skips.summary(), main_process_only=False)
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
            skips = SkipCounter()
    progress.close()
    if skips.seen:
        logger.info("partial epoch %d: %s", state["epoch"], skips.summary(), main_process_only=False)
    if val_loader is not None and validated_at != state["step"]:
        run_validation()

    accelerator.wait_for_everyone()
    save_model(accelerator, unwrapped, processor, output_dir / "final", training_record())
    logger.info("saved the final model and processor to %s", output_dir / "final", main_process_only=True)
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        from vlp.hub import HubPushError, push

        try:
            url = push(output_dir, args.push_to_hub, private=args.hub_private)
        except (HubPushError, ValueError) as err:
            logger.error("--push-to-hub failed: %s. The model is saved in %s; push it with `vlp push %s %s`", err,
                         output_dir / "final", output_dir, args.push_to_hub)
            return 1
        logger.info("pushed the final model to %s: %s", args.push_to_hub, url)
    return 0


def train_step(accelerator, model, unwrapped, optimizer, scheduler, micro: list[dict], max_grad_norm,
               cache_negatives: bool = True) -> dict:
    """One optimizer step over `len(micro)` micro-batches. With several micro-batches, paired text and
    `cache_negatives`, the global loss of each sees the cached embeddings of all the others as negatives (open_clip's
    `--accum-freq`); otherwise each micro-batch is its own batch. Per-sample terms are averaged over the
    micro-batches. Returns the step's unweighted terms, its weighted `loss` and the heads' logged values, as detached
    tensors (no host sync)."""
    k = len(micro)
    weights = unwrapped.config.loss_weights()
    logged: dict[str, torch.Tensor] = {}
    cache = None
    paired = cache_negatives and k > 1 and all("input_ids" in b for b in micro)
    if paired:
        with torch.no_grad(), accelerator.autocast():
            images = torch.cat([unwrapped.get_image_features(b["pixel_values"]) for b in micro])
            texts = torch.cat([unwrapped.get_text_features(b["input_ids"], b["attention_mask"], b.get("sentence_ids"))
                               for b in micro])
        starts = [0]
        for b in micro[:-1]:
            starts.append(starts[-1] + b["pixel_values"].shape[0])
    for j, batch in enumerate(micro):
        sync = contextlib.nullcontext() if j == k - 1 else accelerator.no_sync(model)
        if paired:
            cache = FeatureCache(images, texts, starts[j], num_chunks=k)
        with sync, accelerator.autocast():
            out = model(**model_inputs(batch), return_loss=True, feature_cache=cache)
            loss = sum(weights[name] * value * (1.0 if cache is not None and name.startswith("global_") else 1.0 / k)
                       for name, value in out.losses.items())
            accelerator.backward(loss)
        for name, value in {**out.losses, **out.logs}.items():
            logged[name] = logged.get(name, 0.0) + value.detach().float() / k
    logged["loss"] = sum(weights[name] * logged[name] for name in weights if name in logged)
    if max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return logged


def _until_any_rank_ends(accelerator: Accelerator, batches):
    """Yield batches while every process still has one, so that no process waits forever in a collective call
    for one whose data ran out (streamed shards can differ by a batch)."""
    iterator = iter(batches)
    while True:
        batch = next(iterator, None)
        if accelerator.num_processes > 1:
            has = torch.tensor(0.0 if batch is None else 1.0, device=accelerator.device)
            if accelerator.reduce(has, reduction="sum").item() < accelerator.num_processes:
                return
        if batch is None:
            return
        yield batch


def _all_have_data(accelerator: Accelerator, batch: dict) -> bool:
    """False when this process's batch, or any other process's, lost every row (all processes skip it together,
    so that no collective operation waits forever)."""
    has = torch.tensor(1.0 if "pixel_values" in batch else 0.0, device=accelerator.device)
    if accelerator.num_processes > 1:
        has = accelerator.reduce(has, reduction="sum")
        return bool(has.item() == accelerator.num_processes)
    return bool(has.item())


def _flat_hparams(config: PretrainConfig) -> dict:
    flat = {}
    for section, values in config.to_dict().items():
        if isinstance(values, dict):
            for key, value in values.items():
                flat[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
        else:
            flat[section] = values
    return flat


if __name__ == "__main__":
    sys.exit(main())
