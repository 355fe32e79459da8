"""Subcommands of this package (registered by zkfp.cli). Only argparse is imported here."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fingerprint", help="fingerprint a transformers checkpoint or a Taylor release")
    p.add_argument("path", help="model folder (config.json + safetensors) or Taylor release folder")
    p.add_argument("--out", required=True, help="where to write FP.json")
    p.add_argument("--image", help="also render the fingerprint to this PNG")
    p.add_argument("--tokens-from", help="use the tokens of this FP.json (to compare models whose "
                   "vocabularies differ or are numbered otherwise)")
    p.add_argument("--no-invariants", action="store_true",
                   help="leave the invariant terms and the per-head vectors out of FP.json (they reveal "
                   "more about the weights than v)")
    p.set_defaults(handler=_fingerprint)

    c = sub.add_parser("compare", help="compare a suspect with a published fingerprint (similarity on the "
                                       "100×cosine scale + verdict)")
    c.add_argument("published", help="FP.json, or a proof bundle folder (its proven v; run zkfp verify on it first), "
                   "or the published release or model folder (then SUSPECT must be a model or release too, and "
                   "their weights are compared, bases aligned)")
    c.add_argument("suspect", help="model folder or Taylor release (fingerprinted on PUBLISHED's token ids), "
                   "FP.json or proof bundle folder")
    c.add_argument("--json", action="store_true", help="print a JSON object")
    c.set_defaults(handler=_compare)

    r = sub.add_parser("registry", help="a local registry of published fingerprints (for zkfp identify)")
    rsub = r.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    add = rsub.add_parser("add", help="register a proof bundle (verified first: proven) or an FP.json (unproven)")
    add.add_argument("path", metavar="BUNDLE_OR_FP_JSON")
    add.add_argument("--name", help="entry name (default: the bundle folder's name or the file's stem)")
    add.add_argument("--srs", metavar="FILE", help="the SRS the bundle's proof was made under")
    add.add_argument("--allow-dev-srs", action="store_true", help="accept a proof made with an insecure dev SRS")
    add.add_argument("--release", metavar="DIR", help="the published release (or model) folder, checked and "
                     "recorded: identify then compares model suspects with it on the weights")
    lst = rsub.add_parser("list", help="list the registered fingerprints")
    rem = rsub.add_parser("remove", help="remove an entry")
    rem.add_argument("name")
    for q in (add, lst, rem):
        _registry_option(q)
    lst.add_argument("--json", action="store_true", help="print a JSON list")
    r.set_defaults(handler=_registry)

    i = sub.add_parser("identify", help="rank every registered fingerprint by similarity with a suspect")
    i.add_argument("suspect", help="model folder or Taylor release (fingerprinted on each registered token "
                   "list), FP.json or proof bundle folder")
    _registry_option(i)
    i.add_argument("--json", action="store_true", help="print a JSON object")
    i.add_argument("--html", metavar="REPORT.html", help="also write a self-contained HTML report")
    i.add_argument("--top", type=int, default=10, help="matches to print (default 10; --json lists all)")
    i.add_argument("--release", action="append", default=[], type=_name_and_folder, metavar="NAME=DIR",
                   help="the published release (or model) folder of registered entry NAME: that entry is scored on "
                   "the weights, bases aligned (the suspect must be a model or release folder; repeatable)")
    i.set_defaults(handler=_identify)


def _name_and_folder(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, folder


def _registry_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", metavar="PATH", help="registry file (default: $ZKFP_REGISTRY, else "
                   "$XDG_DATA_HOME/zkfp/registry.sqlite or ~/.local/share/zkfp/registry.sqlite)")


def _fingerprint(args: argparse.Namespace) -> int:
    from fingerprint.extract import extract
    from fingerprint.fpjson import load, save
    from fingerprint.tokens import ids_to_read

    other = load(args.tokens_from) if args.tokens_from else None
    fp = extract(args.path, token_ids=other and ids_to_read(args.path, other.token_ids, other.tokens))
    save(fp, args.out, with_invariants=not args.no_invariants)
    msg = f"wrote {args.out} (spec {fp.spec['version']}, k={fp.spec['k']}, m={fp.spec['m']})"
    if args.image:
        from fingerprint.render import save_png

        save_png(fp.v, args.image)
        msg += f" and {args.image}"
    print(msg)
    return 0


# Where a fingerprint leaves a lineage open (plain-MLP models, heavy continued pretraining), the
# weights, bases aligned, separate every pair of the README's zoo (AUC 1.0): say so where it can be done.
_WEIGHTS_DECIDE = "inconclusive on the fingerprint; with the published release at hand, its weights decide:"


def _compare(args: argparse.Namespace) -> int:
    import json

    from fingerprint import fpjson
    from fingerprint.compare import compare
    from fingerprint.identify import is_model_folder, suspect_fingerprint

    if is_model_folder(args.published):
        from fingerprint.weights import compare_weights

        result = compare_weights(args.published, args.suspect)
    else:
        published = fpjson.load(args.published)
        result = compare(published, suspect_fingerprint(args.suspect, published.token_ids, published.tokens))
        result["suspect_fingerprinted"] = is_model_folder(args.suspect)
    if args.json:
        print(json.dumps(result))
    else:
        if result["basis"] == "weights":
            print(f"aligned the bases of {args.suspect} to {args.published} on their embeddings "
                  f"(residual {result['alignment_residual']:.2f})")
        elif result["suspect_fingerprinted"]:
            where = " (at its own ids for them: it numbers its vocabulary otherwise)" if result["renumbered"] else ""
            print(f"fingerprinted {args.suspect} on the published fingerprint's {result['k']} tokens{where}")
        lay = result["layers"]
        what = "the heads, matched one to one" if result["basis"] == "heads" else result["basis"]
        print(f"similarity {result['similarity']:.2f} (100 × cosine of {what}, layers aligned): "
              f"{result.get('forms_verdict', result['verdict'])}")
        if result["basis"] == "weights":
            print(f"gauge {result['gauge']:.2f} (unbiased CKA of W_q and W_k, bases matched by a signed permutation; "
                  f"≥ {result['gauge_related']} is same-lineage on its own, a low one says nothing): {result['verdict']}")
        print(f"  {len(lay['aligned'])} of the published model's {lay['published']} layers matched in the suspect's "
              f"{lay['suspect']}: " + ", ".join(f"{i}→{j} ({s:.0f})" for i, j, s in lay["aligned"]))
        print(f"  thresholds: same-lineage ≥ {result['thresholds']['related']}, unrelated ≤ "
              f"{result['thresholds']['unrelated']}; implied false-positive rate {result['false_positive_rate']:.1e}"
              + (" (a side ties its output head to the embedding: the tied thresholds)" if result.get("tied") else ""))
        if result.get("same_tokens") is False:
            print("  warning: the suspect's tokens at these ids are not the published ones (another vocabulary), "
                  "so rows of different tokens were compared")
        if result["verdict"] == "inconclusive" and result.get("suspect_fingerprinted"):
            print(f"  {_WEIGHTS_DECIDE} zkfp compare RELEASE_DIR {args.suspect}")
    return 0



def _registry(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from fingerprint.registry import Registry, add_file, default_path

    path = Path(args.registry) if args.registry else default_path()
    if args.registry_command == "add":
        with Registry(path) as reg:
            e = add_file(reg, args.path, args.name, srs=args.srs, allow_dev_srs=args.allow_dev_srs,
                         release=args.release)
        how = f"proven (commitment digest {e.commitment_digest})" if e.proven else "unproven (a plain FP.json)"
        with_release = f", with its release {e.release} (invariants and heads computed from it)" if e.release else ""
        print(f"added {e.name!r}: {how}{with_release}, to {path}")
    elif args.registry_command == "remove":
        with Registry(path) as reg:
            reg.remove(args.name)
        print(f"removed {args.name!r} from {path}")
    elif not path.exists():
        print("[]" if args.json else f"no registry at {path} yet (zkfp registry add BUNDLE_OR_FP_JSON)")
    else:
        with Registry(path, create=False) as reg:
            entries = reg.entries()
        if args.json:
            print(json.dumps([{"name": e.name, "proven": e.proven, "commitment_digest": e.commitment_digest,
                               "srs_kind": e.srs_kind, "spec": e.spec.get("version"), "source": e.source,
                               "release": e.release, "family": e.model.get("family"), "bases": list(e.bases)}
                              for e in entries]))
        for e in [] if args.json else entries:
            proof = f"proven ({e.srs_kind} SRS, commitment {e.commitment_digest[:16]}…)" if e.proven else "unproven"
            release = f"\trelease {e.release}" if e.release else ""
            print(f"{e.name}\t{proof}\t{e.spec.get('version')}\t{'+'.join(e.bases)}\t{e.source}{release}")
        if not args.json:
            print(f"{len(entries)} fingerprint(s) in {path}")
    return 0


def _identify(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from fingerprint.identify import identify
    from fingerprint.registry import Registry

    with Registry(args.registry, create=False) as reg:
        ident = identify(args.suspect, reg, releases=dict(args.release))
    if args.html:
        from fingerprint.report import html_report

        Path(args.html).write_text(html_report(ident), encoding="utf-8")
    if args.json:
        print(json.dumps(ident.to_json()))
        return 0
    how = "fingerprinted on each registered token list" if ident.fingerprinted else "as published"
    print(f"suspect {args.suspect} ({how}); {len(ident.matches)} registered fingerprint(s), best first:")
    for rank, m in enumerate(ident.matches[: args.top], start=1):
        proof = "proven" + (" (dev SRS)" if m.srs_kind == "dev" else "") if m.proven else "unproven"
        if m.similarity is None:
            print(f"{rank:>4}  {'-':>7}  {'':<10}  not comparable ({m.reason})  {proof}  {m.name}")
        else:
            print(f"{rank:>4}  {m.similarity:7.2f}  {m.basis:<10}  {m.verdict:<12}  {proof:<16}  {m.name}")
        if m.note:
            print(f"{'':>4}  note: {m.note}")
    if len(ident.matches) > args.top:
        print(f"  … {len(ident.matches) - args.top} more (--top N, or --json for all)")
    compared = sum(m.similarity is not None for m in ident.matches)
    print(f"  were all {compared} compared entries unrelated to the suspect, the implied chance that one is still "
          f"called same-lineage: ≤ {ident.false_positive_bound():.1e}")
    undecided = next((m.name for m in ident.matches[: args.top]
                      if m.verdict == "inconclusive" and m.basis != "weights"), None)
    if undecided and ident.fingerprinted:
        print(f"  {undecided}: {_WEIGHTS_DECIDE} zkfp identify {args.suspect} --release {undecided}=RELEASE_DIR "
              "(or record it: zkfp registry add … --release RELEASE_DIR)")
    if args.html:
        print(f"wrote {args.html}")
    return 0
