import json, sys
a = json.load(open(sys.argv[1])); b = json.load(open(sys.argv[2]))
def strip(d):
    if isinstance(d, dict):
        return {k: strip(v) for k, v in d.items() if k not in ("seconds", "seconds_total")}
    if isinstance(d, list): return [strip(x) for x in d]
    return d
n = [0]
def diff(x, y, path=""):
    if type(x) != type(y): print(path, x, y); n[0] += 1; return
    if isinstance(x, dict):
        for k in sorted(set(x) | set(y)): diff(x.get(k), y.get(k), path + "/" + k)
    elif isinstance(x, list):
        for i, (p, q) in enumerate(zip(x, y)): diff(p, q, f"{path}[{i}]")
    elif x != y: print(path, x, y); n[0] += 1
diff(strip(a), strip(b))
print("differences:", n[0], "| identical" if n[0] == 0 else "")
