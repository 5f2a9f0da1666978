import json
from decimal import Decimal
from tests.mesh_oracle import MeshOracle, METRIC_NAMES
async def test_peek(mesh, database_urls):
    o = MeshOracle(database_urls["sales"], database_urls["marketing"])
    for m in METRIC_NAMES:
        got = json.loads((await mesh.get(f"/mesh/v1/{m}")).text, parse_float=Decimal)
        exp = o.compute(m)
        print(m, len(exp))
        for r in exp[:3]: print(r)
        print(got[:1])
