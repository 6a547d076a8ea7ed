"""`dsgateway demo`: a whole federation on one machine and a study through it.

- `registry`: three synthetic multiple-sclerosis registries (COVID-19 outcomes), from a seed;
- `launcher`: a coordinator (with its relay) and three stations, each its own process;
- `study`: the researcher's federated study through the relay and a coordinator task;
- `report`: the printed tables and the forest plot.
"""
