# One image for every DataMesh service; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY shared ./shared
COPY services ./services
COPY migrations ./migrations
RUN pip install --no-cache-dir --constraint constraints.txt --editable . \
    && useradd --system --no-create-home datamesh
USER datamesh
EXPOSE 8000 8001 8002
CMD ["uvicorn", "services.federation.app:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "20"]
