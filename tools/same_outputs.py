"""Prove that two revisions of citylens write byte-identical artefacts (issue 14: behaviour stays the same).

    python tools/same_outputs.py --base REV [--head REV | --head-worktree] [--keep DIR]

Each side gets a detached `git worktree` (the head defaults to the current working tree, uncommitted and
untracked files included, snapshotted into a worktree) and runs the same small multirun sweep with
PYTHONPATH pointing at that tree: the smoke experiment at 32 px, Simple and Simpler x seeds 0 and 1 (four
runs, so residuals and the sweep report compare runs), CSV logger, W&B disabled, every after-fit callback
and the sweep report on (their defaults). Both sides run one after the other at the SAME absolute paths
(<root>/tree, <root>/out, <root>/cache, cwd <root>/work, hydra.sweep.dir=<root>/out/sweep): artefacts that
record a path (mask-store provenance, .hydra/ configs, the report) can then be compared as they are, and
no sweep folder holds a timestamp. Each side then moves to <root>/base or <root>/head.

Each side generates its own synthetic data, view and label-map caches (a few seconds at 32 px), compared as
artefacts too; --shared-cache makes the head reuse the base's caches instead.

Both output trees are walked, files paired by relative path (timestamped folder names mapped to <time>)
and compared by sha256. The few things that differ between two runs of one revision, found by running
one revision twice (the control: --base X --head X), are normalised or excluded by the rules below, and
every rule is printed as "not compared: ..." with its reason. Binary numeric artefacts (.npy stores, .png
figures, JPEGs) are compared byte for byte. Exit status: 0 when every compared file is identical, 1 when
some differ or exist on one side only, 2 when a revision is unknown or a sweep fails.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from citylens.core.io import sha256

# The sweep both sides run (citylens-train -m ...): about a minute per tree on 2 CPU cores.
SWEEP = ["experiment=smoke", "data.input_size=32", "model=simple,simpler", "seed=0,1"]


@dataclass(frozen=True)
class Rule:
    """A normalisation or exclusion: `pattern` is an fnmatch glob on the paired relative path (`*` also
    matches `/`); `keys` (JSON rules only) are fnmatch globs on dotted key paths, dropped before comparing."""

    kind: str  # "exclude" | "json" | "zip"
    pattern: str
    reason: str
    keys: tuple[str, ...] = ()


# Found by the control (one revision run twice at the same paths): everything else was byte-identical.
RULES: tuple[Rule, ...] = (
    Rule(
        "exclude",
        "*/train.log",
        "Python logging file: a wall-clock timestamp on every line and measured durations "
        "('t-SNE done in 1.4 s'); log messages are not artefacts",
    ),
    Rule(
        "zip",
        "*.ckpt",
        "torch.save zip: its top folder is named after the atomic writer's temp file (.best.tmp<pid>); "
        "compared member by member, every member's bytes, with that folder name dropped",
    ),
    Rule(
        "json",
        "*/masks/meta.json",
        "sha256 of the checkpoint file, whose bytes hold the pid-named zip folder (the checkpoint itself "
        "is compared member by member)",
        keys=("checkpoint_sha256",),
    ),
    Rule(
        "json",
        "*/steps/*.json",
        "a step record: the sha256 of the checkpoint and of masks/meta.json, both holding the pid-named zip "
        "folder (those files are compared normalised themselves)",
        keys=("checkpoint_sha256", "*masks/meta.json"),
    ),
    Rule(
        "json",
        "*/complete.json",
        "the run's finish time, and the sha256 of files holding the pid-named zip folder (*.ckpt, "
        "masks/meta.json, the step records; those files are compared normalised themselves, their sizes "
        "here still are)",
        keys=(
            "finished_at",
            "artefacts.*.ckpt.sha256",
            "artefacts.*masks/meta.json.sha256",
            "artefacts.*steps/*.json.sha256",
        ),
    ),
)

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(_\d+)?")
TEXT_SUFFIXES = {".csv", ".md", ".yaml", ".yml", ".txt", ".html", ".json", ".log", ".tsv"}


# ---------------------------------------------------------------------------------------------- comparison


def stable_relpath(rel: str) -> str:
    """The pairing key of a relative path: a timestamp in a folder or file name (Hydra's default run and
    sweep folders, `2026-12-02_07-23-23_610767_simple-s0`) becomes `<time>`."""
    return "/".join(TIMESTAMP.sub("<time>", part) for part in rel.split("/"))


def walk(root: Path, prefix: str = "") -> dict[str, Path]:
    """Every plain file under root by stable relative path (prefixed), __pycache__ skipped."""
    files: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        key = prefix + stable_relpath(path.relative_to(root).as_posix())
        if key in files:
            raise ValueError(f"two files map to {key}: {files[key]} and {path}")
        files[key] = path
    return files


def rule_for(rel: str, rules: Iterable[Rule] = RULES) -> Rule | None:
    for rule in rules:
        if fnmatch.fnmatch(rel, rule.pattern):
            return rule
    return None


def drop_keys(obj: object, patterns: tuple[str, ...], at: str = "") -> object:
    """A copy of a JSON value without the dict entries whose dotted key path matches one of the patterns."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            path = f"{at}.{key}" if at else str(key)
            if any(fnmatch.fnmatchcase(path, p) for p in patterns):
                continue
            out[key] = drop_keys(value, patterns, path)
        return out
    if isinstance(obj, list):
        return [drop_keys(v, patterns, f"{at}[{i}]") for i, v in enumerate(obj)]
    return obj


def zip_members(path: Path) -> list[tuple[str, str]]:
    """(member name without its top folder, sha256 of its bytes) for every member of a zip archive."""
    with zipfile.ZipFile(path) as archive:
        members = []
        for info in archive.infolist():
            name = info.filename.split("/", 1)[1] if "/" in info.filename else info.filename
            members.append((name, hashlib.sha256(archive.read(info)).hexdigest()))
    return sorted(members)


def digest(path: Path, rule: Rule | None) -> str:
    """sha256 of the file's bytes, or of its normalised form under a json/zip rule."""
    if rule is None:
        return sha256(path)
    if rule.kind == "json":
        value = drop_keys(json.loads(path.read_text()), rule.keys)
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
    if rule.kind == "zip":
        return hashlib.sha256(json.dumps(zip_members(path)).encode()).hexdigest()
    raise ValueError(f"no digest for a {rule.kind} rule")


@dataclass
class Row:
    status: str  # identical | differing | only-in-base | only-in-head | not-compared
    rel: str
    note: str = ""
    rule: str = ""  # the pattern of the rule that normalised or excluded it


def explain_difference(a: Path, b: Path, rule: Rule | None) -> str:
    """A short hint at where two differing files differ (best effort, never raises)."""
    try:
        if rule is not None and rule.kind == "zip":
            ma, mb = dict(zip_members(a)), dict(zip_members(b))
            names = sorted(n for n in set(ma) | set(mb) if ma.get(n) != mb.get(n))
            return "zip members differ: " + ", ".join(names[:5])
        if a.suffix == ".json":
            keys = rule.keys if rule else ()
            va, vb = drop_keys(json.loads(a.read_text()), keys), drop_keys(json.loads(b.read_text()), keys)
            return "keys differ: " + ", ".join(json_diff(va, vb)[:6])
        if a.suffix == ".npy":
            import numpy as np

            xa, xb = np.load(a, allow_pickle=False), np.load(b, allow_pickle=False)
            if xa.shape != xb.shape or xa.dtype != xb.dtype:
                return f"shape/dtype {xa.shape} {xa.dtype} vs {xb.shape} {xb.dtype}"
            neq = xa != xb
            if np.issubdtype(xa.dtype, np.floating):
                neq &= ~(np.isnan(xa) & np.isnan(xb))
            extra = ""
            if np.issubdtype(xa.dtype, np.number) and neq.any():
                extra = f", max |diff| {np.abs(xa.astype(float) - xb.astype(float))[neq].max():.3g}"
            return f"{int(neq.sum())}/{xa.size} elements differ{extra}"
        if a.suffix in TEXT_SUFFIXES:
            la, lb = a.read_text(errors="replace").splitlines(), b.read_text(errors="replace").splitlines()
            for i, (x, y) in enumerate(zip(la, lb), 1):
                if x != y:
                    return f"line {i}: {x[:70]!r} vs {y[:70]!r}"
            return f"{len(la)} vs {len(lb)} lines"
        return f"{a.stat().st_size} vs {b.stat().st_size} bytes"
    except Exception as exc:  # a hint only
        return f"({type(exc).__name__}: {exc})"


def json_diff(a: object, b: object, at: str = "") -> list[str]:
    """Dotted paths where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            path = f"{at}.{key}" if at else str(key)
            if key not in a or key not in b:
                out.append(path + (" (head only)" if key not in a else " (base only)"))
            else:
                out += json_diff(a[key], b[key], path)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in json_diff(x, y, f"{at}[{i}]")]
    return [] if a == b else [at or "<root>"]


def compare(base: dict[str, Path], head: dict[str, Path], rules: Iterable[Rule] = RULES) -> list[Row]:
    """One row per paired path: identical, differing, only-in-base, only-in-head or not-compared."""
    rules = tuple(rules)
    rows = []
    for rel in sorted(set(base) | set(head)):
        rule = rule_for(rel, rules)
        if rule is not None and rule.kind == "exclude":
            rows.append(Row("not-compared", rel, rule.reason, rule.pattern))
        elif rel not in head:
            rows.append(Row("only-in-base", rel))
        elif rel not in base:
            rows.append(Row("only-in-head", rel))
        elif digest(base[rel], rule) == digest(head[rel], rule):
            rows.append(Row("identical", rel, "normalised" if rule else "", rule.pattern if rule else ""))
        else:
            note = explain_difference(base[rel], head[rel], rule)
            rows.append(Row("differing", rel, note, rule.pattern if rule else ""))
    return rows


def command_line_rules(excludes: Iterable[str], drop_keys: Iterable[str], rules: tuple = RULES) -> tuple:
    """RULES with --exclude GLOB and --drop-key GLOB:KEY added. The first matching rule is the one applied,
    so exclusions come first (they win over a built-in rule of the same files); a key dropped from a file
    that a JSON rule already covers extends that rule."""
    rules = tuple(Rule("exclude", g, "excluded on the command line (--exclude)") for g in excludes) + tuple(
        rules
    )
    for spec in drop_keys:
        glob, _, key = spec.partition(":")
        if not glob or not key:
            raise ValueError(f"--drop-key {spec!r}: expected GLOB:KEY")
        same = [r for r in rules if r.kind == "json" and r.pattern == glob]
        if same:
            extended = Rule("json", glob, f"{same[0].reason}; and --drop-key {key}", (*same[0].keys, key))
            rules = tuple(extended if r is same[0] else r for r in rules)
        else:
            rules += (Rule("json", glob, "dropped on the command line (--drop-key)", (key,)),)
    return rules


def passed(rows: Iterable[Row]) -> bool:
    return all(r.status in ("identical", "not-compared") for r in rows)


def print_report(rows: list[Row], rules: Iterable[Rule] = RULES, list_all: bool = False, out=None) -> None:
    out = out or sys.stdout
    rules = tuple(rules)
    used = Counter(r.rule for r in rows if r.rule)
    for rule in rules:
        n = used[rule.pattern]
        if rule.kind == "exclude":
            print(f"not compared: {rule.pattern} ({rule.reason}) [{n} files]", file=out)
        else:
            what = f"keys {', '.join(rule.keys)}" if rule.keys else "zip folder name"
            print(f"not compared: {what} of {rule.pattern} ({rule.reason}) [{n} files]", file=out)
    print(file=out)
    width = max((len(r.rel) for r in rows), default=10)
    for row in rows:
        if list_all or row.status not in ("identical", "not-compared"):
            note = row.note if row.status != "not-compared" else f"({row.rule})"
            print(f"  {row.status:<13} {row.rel:<{width}}  {note}".rstrip(), file=out)
    print(file=out)
    counts = Counter(r.status for r in rows)
    by_ext: dict[str, Counter] = {}
    for r in rows:
        by_ext.setdefault(Path(r.rel).suffix or "(none)", Counter())[r.status] += 1
    cols = ["identical", "differing", "only-in-base", "only-in-head", "not-compared"]
    print(f"  {'kind':<10}" + "".join(f"{c:>14}" for c in cols), file=out)
    for ext in sorted(by_ext):
        print(f"  {ext:<10}" + "".join(f"{by_ext[ext][c]:>14}" for c in cols), file=out)
    print(f"  {'all':<10}" + "".join(f"{counts[c]:>14}" for c in cols), file=out)


# ---------------------------------------------------------------------------------------------- sweeps


class Failure(Exception):
    """A revision that does not exist, a failed git command or sweep: exit status 2."""


def git(repo: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise Failure(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def resolve(repo: Path, rev: str) -> str:
    sha = git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if not sha:
        raise Failure(f"no such revision in {repo}: {rev!r}")
    return sha


def snapshot_worktree(repo: Path) -> tuple[str, list[str]]:
    """The working tree as a commit (tracked files with their uncommitted changes, `git stash create`)
    and the untracked, not ignored files to copy on top."""
    sha = git(repo, "stash", "create") or resolve(repo, "HEAD")
    untracked = git(repo, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
    return sha, [u for u in untracked if u]


def log(msg: str) -> None:
    print(f"[same-outputs {time.strftime('%H:%M:%S')}] {msg}", flush=True)


PROGRESS = re.compile(r"\[HYDRA\]\s+(#\d+ : .*|sweep report: .*)$")


def run_sweep(
    side: str,
    tree: Path,
    root: Path,
    python: str,
    overrides: list[str],
    timeout: float,
) -> float:
    """Run the sweep with PYTHONPATH=tree at the fixed paths under root; returns the wall time in s."""
    for name in ("out", "work"):
        (root / name).mkdir(parents=True, exist_ok=True)
    # citylens-train's module: citylens/app/train.py since the adapters moved into citylens/app.
    module = "citylens.app.train" if (tree / "citylens" / "app" / "train.py").is_file() else "citylens.train"
    cmd = [
        python,
        "-m",
        module,
        "-m",
        *overrides,
        f"paths.output_dir={root / 'out'}",
        f"paths.cache_dir={root / 'cache'}",
        f"hydra.sweep.dir={root / 'out' / 'sweep'}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CITYLENS_", "WANDB_"))}
    env.update(PYTHONPATH=str(tree), WANDB_MODE="disabled", WANDB_SILENT="true", PYTHONDONTWRITEBYTECODE="1")
    log_path = root / f"{side}.log"
    log(f"{side}: {' '.join(cmd[1:])}  (PYTHONPATH={tree}, log {log_path})")
    start = time.monotonic()
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            cmd,
            cwd=root / "work",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: the watchdog kills its workers with it
        )
        assert proc.stdout is not None

        def kill_group() -> None:
            # SIGKILL: Lightning's SIGTERM handler only logs the signal. Only the group started here.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        # A watchdog, so that a sweep hung without printing (a deadlocked worker pool) is killed too.
        watchdog = threading.Timer(timeout, kill_group)
        watchdog.start()
        try:
            for line in proc.stdout:
                log_file.write(line)
                match = PROGRESS.search(line.rstrip())
                if match:
                    log(f"{side}: {match.group(1).strip()}")
            rc = proc.wait()
        except BaseException:
            kill_group()
            raise
        finally:
            watchdog.cancel()
        if time.monotonic() - start >= timeout:
            raise Failure(f"{side} sweep ran over {timeout:.0f} s and was killed (log {log_path})")
    elapsed = time.monotonic() - start
    if rc != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
        raise Failure(f"{side} sweep exited with {rc} (log {log_path}):\n{tail}")
    sweep = root / "out" / "sweep"
    runs = [p for p in sweep.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    bad = [p.name for p in runs if not (p / "complete.json").is_file() or (p / "failed.json").exists()]
    if not runs or bad or not (sweep / "report" / "report.md").is_file():
        raise Failure(
            f"{side} sweep incomplete: runs {len(runs)}, failed {bad}, report present "
            f"{(sweep / 'report' / 'report.md').is_file()} (log {log_path})"
        )
    log(f"{side}: {len(runs)} runs and the sweep report in {elapsed:.0f} s")
    return elapsed


@dataclass
class Side:
    name: str
    sha: str
    label: str
    untracked: tuple[str, ...] = ()
    picks: tuple[str, ...] = ()  # commits whose change is applied on top (git apply --3way)


def run_side(repo: Path, side: Side, root: Path, args: argparse.Namespace, worktrees: list[Path]) -> float:
    tree = root / "tree"
    log(f"{side.name}: git worktree add --detach {tree} {side.sha[:12]} ({side.label})")
    git(repo, "worktree", "add", "--detach", str(tree), side.sha)
    worktrees.append(tree)
    for rel in side.untracked:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, tree / rel)
    for pick in side.picks:
        log(
            f"{side.name}: applying the change of {pick[:12]} ({git(repo, 'log', '-1', '--format=%s', pick)})"
        )
        patch = subprocess.run(  # not git(): its strip() would cut a trailing blank context line
            ["git", "-C", str(repo), "diff", "--binary", f"{pick}^", pick], capture_output=True, text=True
        ).stdout
        proc = subprocess.run(
            ["git", "-C", str(tree), "apply", "--3way"], input=patch, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise Failure(f"the change of {pick} does not apply on {side.label}: {proc.stderr.strip()}")
    extra = args.head_overrides if side.name == "head" else []
    elapsed = run_sweep(side.name, tree, root, args.python, [*args.overrides, *extra], args.timeout)
    dest = root / side.name
    dest.mkdir()
    git(repo, "worktree", "move", str(tree), str(dest / "tree"))
    worktrees[-1] = dest / "tree"
    shutil.move(root / "out", dest / "out")
    if not args.shared_cache:
        shutil.move(root / "cache", dest / "cache")
    shutil.move(root / f"{side.name}.log", dest / "sweep.log")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the revision to compare against")
    head = parser.add_mutually_exclusive_group()
    head.add_argument("--head", help="the revision to check (default: the current working tree)")
    head.add_argument("--head-worktree", action="store_true", help="the current working tree (default)")
    parser.add_argument(
        "--base-pick",
        action="append",
        default=[],
        metavar="COMMIT",
        help="apply COMMIT's change on the base before running (a base broken by a bug a later commit "
        "fixed); repeatable",
    )
    parser.add_argument("--keep", type=Path, help="keep worktrees, outputs and logs in this (new) folder")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the git repository (default: cwd)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter (default: this one)")
    parser.add_argument("--shared-cache", action="store_true", help="the head reuses the base's data caches")
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds per sweep before it is killed (default 600)"
    )
    parser.add_argument("--list-all", action="store_true", help="print identical files too")
    parser.add_argument(
        "--head-overrides",
        nargs="+",
        default=[],
        help="overrides for the head's sweep only (e.g. switching off a step the base does not have)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="also leave out paths matching GLOB (a change meant to differ, e.g. a moved config key); "
        "printed as not compared; repeatable",
    )
    parser.add_argument(
        "--drop-key",
        action="append",
        default=[],
        metavar="GLOB:KEY",
        help="compare JSON files matching GLOB without the dotted key KEY (globs allowed); repeatable",
    )
    parser.add_argument(
        "--overrides", nargs="+", default=SWEEP, help=f"the sweep's overrides (default: {' '.join(SWEEP)})"
    )
    args = parser.parse_args(argv)
    try:
        rules = command_line_rules(args.exclude, args.drop_key)
    except ValueError as err:
        parser.error(str(err))

    worktrees: list[Path] = []
    root: Path | None = None
    try:
        repo = Path(git(args.repo, "rev-parse", "--show-toplevel"))
        picks = tuple(resolve(repo, p) for p in args.base_pick)
        label = args.base + "".join(f" + {p}" for p in args.base_pick)
        base = Side("base", resolve(repo, args.base), label, picks=picks)
        if args.head:
            head_side = Side("head", resolve(repo, args.head), args.head)
        else:
            sha, untracked = snapshot_worktree(repo)
            head_side = Side("head", sha, f"working tree of {repo}", tuple(untracked))
        if args.keep:
            if args.keep.exists() and any(args.keep.iterdir()):
                raise Failure(f"--keep {args.keep}: not an empty folder")
            args.keep.mkdir(parents=True, exist_ok=True)
            root = args.keep.resolve()
        else:
            root = Path(tempfile.mkdtemp(prefix="same_outputs_"))
        times = {}
        for side in (base, head_side):
            times[side.name] = run_side(repo, side, root, args, worktrees)
        log("comparing")
        base_files = walk(root / "base" / "out", "out/")
        head_files = walk(root / "head" / "out", "out/")
        if not args.shared_cache:
            base_files.update(walk(root / "base" / "cache", "cache/"))
            head_files.update(walk(root / "head" / "cache", "cache/"))
        rows = compare(base_files, head_files, rules)
        print()
        print(f"base {base.label} ({base.sha[:12]}): {times['base']:.0f} s")
        print(f"head {head_side.label} ({head_side.sha[:12]}): {times['head']:.0f} s")
        print(f"sweep: {' '.join(args.overrides)}")
        if args.head_overrides:
            print(f"head only: {' '.join(args.head_overrides)}")
        if args.shared_cache:
            print("not compared: cache/ (--shared-cache: one cache, generated by the base, read by both)")
        print_report(rows, rules, list_all=args.list_all)
        ok = passed(rows)
        print("\nSAME OUTPUTS" if ok else "\nOUTPUTS DIFFER")
        return 0 if ok else 1
    except Failure as exc:
        print(f"same_outputs: {exc}", file=sys.stderr)
        if root is not None and not args.keep:
            print(
                "same_outputs: the temp folder is removed now; rerun with --keep DIR to look", file=sys.stderr
            )
        return 2
    finally:
        if root is not None and not args.keep:
            for tree in worktrees:
                git(repo, "worktree", "remove", "--force", str(tree), check=False)
            git(repo, "worktree", "prune", check=False)
            shutil.rmtree(root, ignore_errors=True)
        elif root is not None:
            trees = " ".join(str(t) for t in worktrees)
            log(f"kept in {root}; remove its worktrees with: git worktree remove --force <tree> ({trees})")


if __name__ == "__main__":
    sys.exit(main())
