"""Release a model by moving registry aliases: put a candidate beside production (shadow or
canary), promote it, or roll it back. Every service started with `--model-alias production`
follows the move within a fraction of a second, with no restart and no request dropped.

    python -m lab_code.serving release status
    python -m lab_code.serving release start v3 --mode canary --share 0.1
    python -m lab_code.serving release promote
    python -m lab_code.serving release rollback --reason "users complained"

`start` writes the plan (rollout.json) and points the alias `candidate` at the version; the
services' own rule (lab_code.serving.rollout.RolloutRules) then promotes or rolls back by itself
unless `--manual` is given. Every move is recorded in rollout_events.jsonl beside the aliases.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from lab_code import registry
from lab_code.artifacts import DEFAULT_MODEL_NAME, DEFAULT_REGISTRY, RegistryError, read_aliases
from lab_code.serving.rollout import (
    CANDIDATE,
    MODES,
    PRODUCTION,
    Plan,
    RolloutRules,
    read_events,
    read_plan,
    record_event,
    write_plan,
)


def start(version: str, mode: str = "canary", share: float = 0.1, auto: bool = True,
          rules: RolloutRules | None = None, name: str = DEFAULT_MODEL_NAME,
          registry_dir=DEFAULT_REGISTRY, production: str = PRODUCTION) -> Plan:
    """Put `version` beside production: the plan first, then the alias, so that a service sees
    the plan as soon as it sees the candidate."""
    aliases = read_aliases(registry_dir, name)
    if production not in aliases:
        raise RegistryError(f"No {name}:{production} to compare with: point it at a version "
                            f"first (python -m lab_code.serving release promote --version VN).")
    if aliases[production] == version:
        raise RegistryError(f"{version} is {name}:{production} already: stage a new version "
                            "to try.")
    registry.resolve(name, version=version, registry=registry_dir)  # exists, intact
    plan = Plan(mode=mode, share=share, auto=auto, rules=rules or RolloutRules())
    write_plan(registry_dir, name, plan)
    registry.move_alias(name, CANDIDATE, version, registry_dir)
    record_event(registry_dir, name, action="start", by="hand", release=version,
                 production=aliases[production], mode=mode, share=share, auto=auto)
    return plan


def promote(name: str = DEFAULT_MODEL_NAME, registry_dir=DEFAULT_REGISTRY,
            production: str = PRODUCTION, version: str | None = None) -> str:
    """Point production at the candidate (or at `version`, with no candidate needed: a manual
    release or a return to an older version); returns the version production now names."""
    before = read_aliases(registry_dir, name)
    if version is not None:
        registry.move_alias(name, production, version, registry_dir)
        if before.get(CANDIDATE) == version:
            registry.move_alias(name, CANDIDATE, None, registry_dir, expect=version)
    else:
        version = before.get(CANDIDATE)
        if version is None or not registry.promote(name, CANDIDATE, production, registry_dir,
                                                    expect=version):
            raise RegistryError(f"No {name}:{CANDIDATE} to promote: start one with `python -m "
                                "lab_code.serving release start VN`.")
    write_plan(registry_dir, name, None)
    record_event(registry_dir, name, action="promote", by="hand", release=version,
                 production=before.get(production))
    return version


def rollback(name: str = DEFAULT_MODEL_NAME, registry_dir=DEFAULT_REGISTRY,
             reason: str = "by hand") -> str:
    """Take the candidate away; production keeps answering. Returns the version removed."""
    version = read_aliases(registry_dir, name).get(CANDIDATE)
    if version is None or not registry.move_alias(name, CANDIDATE, None, registry_dir,
                                                  expect=version):
        raise RegistryError(f"No {name}:{CANDIDATE} to roll back.")
    write_plan(registry_dir, name, None)
    record_event(registry_dir, name, action="rollback", by="hand", release=version,
                 reasons=[reason])
    return version


def status(name: str = DEFAULT_MODEL_NAME, registry_dir=DEFAULT_REGISTRY) -> dict:
    """The aliases, the plan, and the last few moves."""
    plan = read_plan(registry_dir, name)
    return {"aliases": read_aliases(registry_dir, name),
            "plan": plan.to_json() if plan is not None else None,
            "events": read_events(registry_dir, name)[-5:]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.serving release",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", default=str(DEFAULT_REGISTRY), metavar="DIR",
                        help="the local model registry (default: %(default)s)")
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME,
                        help="the model's name in the registry (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help="print the aliases, the plan and the last moves (JSON)")
    go = sub.add_parser("start", help="put a version beside production")
    go.add_argument("version", help="the registry version to try, e.g. v3")
    go.add_argument("--mode", choices=MODES, default="canary",
                    help="shadow: it reads a copy of every request, answers none; canary: it "
                         "answers --share of them (default: canary)")
    go.add_argument("--share", type=float, default=0.1,
                    help="the canary's share of requests, 0 to 1 (default: 0.1)")
    go.add_argument("--manual", action="store_true",
                    help="the services only measure; you promote or roll back by hand")
    defaults = RolloutRules()
    for f in fields(RolloutRules):
        go.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)),
                        default=getattr(defaults, f.name), metavar="N",
                        help=f"rule: {f.name.replace('_', ' ')} (default: %(default)s)")
    up = sub.add_parser("promote", help="point production at the candidate")
    up.add_argument("--version", default=None, metavar="VN",
                    help="point production at this version instead (no candidate needed)")
    back = sub.add_parser("rollback", help="take the candidate away")
    back.add_argument("--reason", default="by hand", help="why, for the record")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "status":
            print(json.dumps(status(args.name, args.registry), indent=2))
        elif args.command == "start":
            rules = RolloutRules(**{f.name: getattr(args, f.name) for f in fields(RolloutRules)})
            plan = start(args.version, args.mode, args.share, not args.manual, rules, args.name,
                         args.registry)
            what = f"{plan.share:.0%} canary" if plan.mode == "canary" else "shadow"
            print(f"{args.name}:{CANDIDATE} -> {args.version} ({what}, "
                  f"{'judged by the rule' if plan.auto else 'by hand'})")
        elif args.command == "promote":
            version = promote(args.name, args.registry, version=args.version)
            print(f"{args.name}:{PRODUCTION} -> {version}")
        else:
            version = rollback(args.name, args.registry, args.reason)
            print(f"{args.name}:{CANDIDATE} ({version}) removed; {PRODUCTION} unchanged")
    except (RegistryError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
