# The crm360 worker image, used by docker-compose.yml (production profile).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY processors ./processors
COPY sinks ./sinks
COPY streams ./streams
RUN pip install --no-cache-dir .
ENV CRM360_WEB_HOST=0.0.0.0 \
    CRM360_DATA_DIR=/data
EXPOSE 6066
CMD ["crm360", "worker"]
