package collect

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// TestHandlerOnlyDecides holds the controller's shape (issue 34): the Handler decides, so it
// stays small and remembers nothing in maps of its own; what runs is the executor's
// (onceWork, followWork) and what a request's end left behind is finalStatuses'.
func TestHandlerOnlyDecides(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	methods := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, e.Name(), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil {
					continue
				}
				if star, ok := d.Recv.List[0].Type.(*ast.StarExpr); ok {
					if id, ok := star.X.(*ast.Ident); ok && id.Name == "Handler" {
						methods++
					}
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					ts, ok := s.(*ast.TypeSpec)
					if !ok || ts.Name.Name != "Handler" {
						continue
					}
					for _, field := range ts.Type.(*ast.StructType).Fields.List {
						if _, isMap := field.Type.(*ast.MapType); isMap {
							t.Errorf("Handler has a map field %v: what it remembers belongs to the executor or finalStatuses", field.Names)
						}
					}
				}
			}
		}
	}
	if methods == 0 || methods >= 15 {
		t.Errorf("Handler has %d methods; it decides and returns, so it keeps under 15 (work goes to onceWork/followWork)", methods)
	}
}
