# One image for every DataMesh service; docker-compose.yml (written by `datamesh generate`) picks
# the command. The `jupyter` stage adds the notebooks' libraries and the notebooks
# (docker-compose.yml's `jupyter` service). No alembic.ini: `datamesh` migrates without one.
FROM python:3.11-slim AS base
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY shared ./shared
COPY services ./services
COPY migrations ./migrations
COPY datamesh ./datamesh
RUN pip install --no-cache-dir --constraint constraints.txt --editable '.[server]' \
    && useradd --system --no-create-home datamesh

# JupyterLab with the client (`from datamesh import Mesh`) and notebooks/ in the home directory;
# it reads the mesh at DATAMESH_URL with the token in DATAMESH_TOKEN (docs/containers.md)
FROM base AS jupyter
RUN pip install --no-cache-dir --constraint constraints.txt --editable '.[notebooks]' \
    && mkdir -p /home/datamesh/work \
    && chown -R datamesh /home/datamesh
COPY --chown=datamesh notebooks /home/datamesh/notebooks
ENV HOME=/home/datamesh JUPYTER_PLATFORM_DIRS=1
WORKDIR /home/datamesh
USER datamesh
EXPOSE 8888
# no fixed login: Jupyter makes a random login token at start and prints the URL with it
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--ServerApp.root_dir=/home/datamesh"]

# JupyterHub's single-user server (deploy/k8s/jupyterhub/values.yaml, docs/deploy.md): the jupyter
# stage plus jupyterhub-singleuser; the hub gives each user's server their own token for the mesh
# (DATAMESH_TOKEN) and the chart's values the mesh's URL, the user id and a volume for work/
FROM jupyter AS singleuser
USER root
RUN pip install --no-cache-dir --constraint /app/constraints.txt --editable '/app[singleuser]'
USER datamesh
CMD ["jupyterhub-singleuser"]

# the services (the last stage: what `docker build .` gives)
FROM base AS service
USER datamesh
# each service's port is the one docker-compose.yml (`datamesh generate`) gives its command
CMD ["python", "-m", "shared.serving.server", "services.federation.app:app", "--host", "0.0.0.0", "--port", "8000"]
