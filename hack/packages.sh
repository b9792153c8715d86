#!/usr/bin/env bash
# Draws the import graph of podcopy's own packages (tests left out) as Graphviz DOT on
# stdout; with an output file ending .svg or .png, renders it with dot (apt-get install
# graphviz); edges implied by others (A->B->C makes A->C) are left out (tred). Usage: bash hack/packages.sh [docs/images/packages.svg]
set -euo pipefail
cd "$(dirname "$0")/.."
mod=$(go list -m)
dot_src() {
	echo 'digraph podcopy {'
	echo '  rankdir=TB; node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10]; edge [color="#6b7a8f"];'
	echo '  subgraph cluster_cmd { label="cmd/"; color="#c8ccd2"; }'
	go list -f '{{.ImportPath}}|{{join .Imports ","}}' "$mod/cmd/..." "$mod/internal/..." "$mod/pkg/..." |
		while IFS='|' read -r pkg imports; do
			short=${pkg#"$mod"/}
			case "$short" in
			internal/testkit*) continue ;;
			pkg/*) fill='#dbe8f5' ;;
			internal/*) fill='#eef1f4' ;;
			*) fill='#f7ecd9' ;;
			esac
			printf '  "%s" [fillcolor="%s"];\n' "$short" "$fill"
			IFS=',' read -ra deps <<<"$imports"
			for d in "${deps[@]}"; do
				case "$d" in
				"$mod"/*) printf '  "%s" -> "%s";\n' "$short" "${d#"$mod"/}" ;;
				esac
			done
		done
	echo '}'
}
if [[ $# -eq 0 ]]; then
	dot_src
	exit 0
fi
out=$1
dot_src | tred | dot -T"${out##*.}" -o "$out"
echo "wrote $out"
