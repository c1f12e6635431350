#!/usr/bin/env python3
"""Turns deployment artifacts into JSON for tests/ops_deploy.rs to assert on.

  dockerfile PATH   the instructions, as parsed by dockerfile-parse (the library Red Hat's
                    OSBS uses), one object per instruction: {"instruction", "value", "stage"}
  yaml PATH         every document of a YAML file (compose file, rendered Helm manifests),
                    as a JSON list
"""

import json
import sys


def dockerfile(path):
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=path)
    stage = -1
    out = []
    for item in parser.structure:
        if item["instruction"] == "FROM":
            stage += 1
        out.append({"instruction": item["instruction"], "value": item["value"], "stage": stage})
    return out


def documents(path):
    import yaml

    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def main():
    command, path = sys.argv[1], sys.argv[2]
    result = {"dockerfile": dockerfile, "yaml": documents}[command](path)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
