// Package report renders the inventory as an HTML page.
package report

import (
	"fmt"
	"html/template"
	"io"
	"strings"

	"example.com/inventory/internal/inventory"
)

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"money": func(cents int) string { return fmt.Sprintf("%d.%02d", cents/100, cents%100) },
	"upper": strings.ToUpper,
	"value": value,
}).Parse(`<!doctype html>
<title>Inventory</title>
<table>
<tr><th>SKU</th><th>Name</th><th>Quantity</th><th>Price</th><th>Value</th></tr>
{{range .Items}}<tr><td>{{upper .SKU}}</td><td>{{.Name}}</td><td>{{.Quantity}}</td><td>{{money .Price}}</td><td>{{money (value .)}}</td></tr>
{{end}}</table>
<p>Total value: {{money .Total}}</p>
`))

type view struct {
	Items []inventory.Item
	Total int
}

// Render writes the report of items to w.
func Render(w io.Writer, items []inventory.Item) error {
	v := view{Items: items}
	for _, it := range items {
		v.Total += value(it)
	}
	return page.Execute(w, v)
}

func value(it inventory.Item) int { return it.Quantity * it.Price }
