"""The static parts of the comparison report page: its style sheet and its small inline script.

The script (no library, no network) sorts a summary table by the clicked header, and filters (search box by
case id) and sorts (predicted quality ascending/descending, case id) the gallery's cases. The URL hash can drive
the gallery on load, ``#search=<text>&sort=<qc-asc|qc-desc|id>``, so a headless browser can check both.
"""

from __future__ import annotations

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5rem auto;max-width:1300px;color:#222;
padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:2px solid #ddd}h3{font-size:1.05rem}
table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0}
td,th{border:1px solid #ccc;padding:.25rem .45rem;text-align:right;vertical-align:top}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
table.sortable th{cursor:pointer}table.sortable th:hover{background:#e2e2e2}
td.best{font-weight:700;background:#fff3cd;outline:2px solid #b58900}
.ci{font-size:.72rem;color:#555}
.cards{display:flex;flex-wrap:wrap;gap:.75rem}.card{border:1px solid #ccc;border-radius:6px;padding:.4rem .9rem}
.card .v{font-size:1.3rem;font-weight:600}.card .k{font-size:.75rem;color:#555}
img{max-width:100%}.note{color:#444;font-size:.85rem}
.case{border:1px solid #ccc;border-radius:6px;padding:.4rem;margin:.5rem 0}
.case h4{margin:.1rem 0}.caseinfo{font-size:.75rem}.flag{font-weight:700;text-decoration:underline}
.gallery-controls{position:sticky;top:0;background:#fff;padding:.4rem 0;border-bottom:1px solid #ddd}
.gallery-controls button{margin:0 .2rem}
pre{background:#f6f6f6;padding:.5rem;font-size:.75rem;overflow:auto}
"""

JS = """
(function(){
function num(td){var v=td?td.getAttribute('data-v'):null;if(v===null){return null;}
var f=parseFloat(v);return isNaN(f)?v:f;}
document.querySelectorAll('table.sortable').forEach(function(t){
t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
var asc=th.getAttribute('data-dir')!=='asc';th.setAttribute('data-dir',asc?'asc':'desc');
var body=t.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
rows.sort(function(a,b){var x=num(a.cells[i]),y=num(b.cells[i]);
if(x===null&&y===null){return 0;}if(x===null){return 1;}if(y===null){return -1;}
var c=(x<y)?-1:(x>y)?1:0;return asc?c:-c;});
rows.forEach(function(r){body.appendChild(r);});});});});
function key(el,hasQc){var v=el.getAttribute(hasQc?'data-qc':'data-dice');
return (v===null||v==='')?Infinity:parseFloat(v);}
function sortCases(g,how){var box=g.querySelector('.cases');var hasQc=g.getAttribute('data-has-qc')==='1';
var cs=Array.prototype.slice.call(box.querySelectorAll('.case'));
cs.sort(function(a,b){var ia=a.getAttribute('data-id'),ib=b.getAttribute('data-id');
if(how==='id'){return ia<ib?-1:ia>ib?1:0;}
var x=key(a,hasQc),y=key(b,hasQc);if(how==='qc-desc'){x=(x===Infinity)?-Infinity:x;y=(y===Infinity)?-Infinity:y;}
var c=(x<y)?-1:(x>y)?1:(ia<ib?-1:ia>ib?1:0);return how==='qc-desc'?-c:c;});
cs.forEach(function(c){box.appendChild(c);});g.setAttribute('data-sorted',how);}
function filterCases(g,q){q=(q||'').toLowerCase();
g.querySelectorAll('.case').forEach(function(c){
c.hidden=q!==''&&c.getAttribute('data-id').toLowerCase().indexOf(q)<0;});}
var gs=document.querySelectorAll('.gallery');
gs.forEach(function(g){var s=g.querySelector('.case-search');
s.addEventListener('input',function(){filterCases(g,s.value);});
g.querySelectorAll('button[data-sort]').forEach(function(b){b.addEventListener('click',function(){
sortCases(g,b.getAttribute('data-sort'));});});});
var h={};location.hash.replace(/^#/,'').split('&').forEach(function(kv){var p=kv.split('=');
if(p[0]){h[p[0]]=decodeURIComponent(p[1]||'');}});
gs.forEach(function(g){if(h.sort){sortCases(g,h.sort);}
if(h.search!==undefined){g.querySelector('.case-search').value=h.search;filterCases(g,h.search);}});
document.body.setAttribute('data-ready','1');
})();
"""
