package openapi

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// modulePath is the banger module; package paths under it map to
// directories under the repository root.
const modulePath = "github.com/banger-dev/banger"

// goPackage is what the generator reads from one package's source: doc
// comments and typed string constants, which reflection cannot see.
type goPackage struct {
	doc       string
	typeDocs  map[string]string   // type name → doc
	fieldDocs map[string]string   // "Type.Field" → doc
	funcDocs  map[string]string   // "Type.Method" or "Func" → doc
	enums     map[string][]string // type name → values of its typed string constants
	consts    map[string]string   // constant name → string value
}

// sources parses packages of the module on demand.
type sources struct {
	root string
	pkgs map[string]*goPackage
}

func newSources(root string) *sources {
	return &sources{root: root, pkgs: map[string]*goPackage{}}
}

// pkg returns the parsed package at import path; packages outside the
// module (time, encoding/json) come back empty.
func (s *sources) pkg(importPath string) (*goPackage, error) {
	if p, ok := s.pkgs[importPath]; ok {
		return p, nil
	}
	p := &goPackage{typeDocs: map[string]string{}, fieldDocs: map[string]string{}, funcDocs: map[string]string{}, enums: map[string][]string{}, consts: map[string]string{}}
	if rel, ok := strings.CutPrefix(importPath, modulePath+"/"); ok {
		if err := p.parseDir(filepath.Join(s.root, filepath.FromSlash(rel))); err != nil {
			return nil, err
		}
	}
	s.pkgs[importPath] = p
	return p, nil
}

func (p *goPackage) parseDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read the API source: %w", err)
	}
	fset := token.NewFileSet()
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.ParseComments)
		if err != nil {
			return fmt.Errorf("parse the API source: %w", err)
		}
		p.addFile(f)
	}
	for _, vals := range p.enums {
		sort.Strings(vals)
	}
	return nil
}

func (p *goPackage) addFile(f *ast.File) {
	if f.Doc != nil {
		p.doc = f.Doc.Text()
	}
	for _, decl := range f.Decls {
		switch d := decl.(type) {
		case *ast.FuncDecl:
			p.funcDocs[funcKey(d)] = d.Doc.Text()
		case *ast.GenDecl:
			p.addGenDecl(d)
		}
	}
}

func funcKey(d *ast.FuncDecl) string {
	if d.Recv == nil || len(d.Recv.List) == 0 {
		return d.Name.Name
	}
	t := d.Recv.List[0].Type
	if star, ok := t.(*ast.StarExpr); ok {
		t = star.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + d.Name.Name
	}
	return d.Name.Name
}

func (p *goPackage) addGenDecl(d *ast.GenDecl) {
	for _, spec := range d.Specs {
		switch s := spec.(type) {
		case *ast.TypeSpec:
			doc := s.Doc.Text()
			if doc == "" && len(d.Specs) == 1 {
				doc = d.Doc.Text()
			}
			p.typeDocs[s.Name.Name] = doc
			if st, ok := s.Type.(*ast.StructType); ok {
				p.addFields(s.Name.Name, st)
			}
		case *ast.ValueSpec:
			if d.Tok == token.CONST {
				p.addConsts(s)
			}
		}
	}
}

func (p *goPackage) addFields(typeName string, st *ast.StructType) {
	for _, f := range st.Fields.List {
		doc := f.Doc.Text()
		if doc == "" {
			doc = f.Comment.Text()
		}
		for _, n := range f.Names {
			p.fieldDocs[typeName+"."+n.Name] = doc
		}
	}
}

// addConsts records string constants; those with an explicit named type
// become that type's enum values.
func (p *goPackage) addConsts(s *ast.ValueSpec) {
	for i, n := range s.Names {
		if i >= len(s.Values) {
			continue
		}
		lit, ok := s.Values[i].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			continue
		}
		v, err := strconv.Unquote(lit.Value)
		if err != nil {
			continue
		}
		p.consts[n.Name] = v
		if id, ok := s.Type.(*ast.Ident); ok {
			p.enums[id.Name] = append(p.enums[id.Name], v)
		}
	}
}

// registeredMethods lists the API methods the daemon registers in dir: the
// method constants passed to api.Handle and api.HandleUpgrade.
func registeredMethods(dir string, apiConsts map[string]string) (map[string]bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read the daemon source: %w", err)
	}
	fset := token.NewFileSet()
	out := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, 0)
		if err != nil {
			return nil, fmt.Errorf("parse the daemon source: %w", err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if m, ok := handledMethod(n, apiConsts); ok {
				out[m] = true
			}
			return true
		})
	}
	return out, nil
}

// handledMethod recognizes api.Handle(s, api.MethodX, …) and
// api.HandleUpgrade(s, api.MethodX, …), returning the method's wire name.
func handledMethod(n ast.Node, apiConsts map[string]string) (string, bool) {
	call, ok := n.(*ast.CallExpr)
	if !ok || len(call.Args) < 2 {
		return "", false
	}
	fn, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || !isAPISelector(fn) || (fn.Sel.Name != "Handle" && fn.Sel.Name != "HandleUpgrade") {
		return "", false
	}
	arg, ok := call.Args[1].(*ast.SelectorExpr)
	if !ok || !isAPISelector(arg) {
		return "", false
	}
	v, ok := apiConsts[arg.Sel.Name]
	return v, ok
}

func isAPISelector(s *ast.SelectorExpr) bool {
	id, ok := s.X.(*ast.Ident)
	return ok && id.Name == "api"
}
